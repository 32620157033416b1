package policy

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Resources of the podarmor API.
var (
	ArmorPolicies        = v1alpha1.SchemeGroupVersion.WithResource("armorpolicies")
	ClusterArmorPolicies = v1alpha1.SchemeGroupVersion.WithResource("clusterarmorpolicies")
)

// Informers is a Store kept current by watching the API server. The policies are
// converted to their typed form once, as they arrive, not on every admission.
type Informers struct {
	namespaces cache.SharedIndexInformer
	armor      cache.SharedIndexInformer
	cluster    cache.SharedIndexInformer
	started    []func(<-chan struct{})
}

// NewInformers builds the informers; Start runs them.
func NewInformers(kube kubernetes.Interface, dyn dynamic.Interface, resync time.Duration) (*Informers, error) {
	kf := informers.NewSharedInformerFactory(kube, resync)
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, resync)
	i := &Informers{
		namespaces: kf.Core().V1().Namespaces().Informer(),
		armor:      df.ForResource(ArmorPolicies).Informer(),
		cluster:    df.ForResource(ClusterArmorPolicies).Informer(),
		started:    []func(<-chan struct{}){kf.Start, df.Start},
	}
	if err := i.armor.SetTransform(typed(ArmorPolicies, func() runtime.Object { return &v1alpha1.ArmorPolicy{} })); err != nil {
		return nil, fmt.Errorf("armorpolicies informer: %w", err)
	}
	if err := i.cluster.SetTransform(typed(ClusterArmorPolicies, func() runtime.Object { return &v1alpha1.ClusterArmorPolicy{} })); err != nil {
		return nil, fmt.Errorf("clusterarmorpolicies informer: %w", err)
	}
	return i, nil
}

// typed converts the unstructured objects of a dynamic informer into API types.
func typed(gvr schema.GroupVersionResource, newObj func() runtime.Object) cache.TransformFunc {
	return func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil // a tombstone, or already converted
		}
		out := newObj()
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
			return nil, fmt.Errorf("decode %s %s: %w", gvr.Resource, u.GetName(), err)
		}
		return out, nil
	}
}

// Start runs the informers until ctx ends and waits for their first list.
func (i *Informers) Start(ctx context.Context) error {
	for _, start := range i.started {
		start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), i.namespaces.HasSynced, i.armor.HasSynced, i.cluster.HasSynced) {
		return fmt.Errorf("policy and namespace caches did not sync: %w", ctx.Err())
	}
	return nil
}

// Synced reports whether every cache has its first list.
func (i *Informers) Synced() bool {
	return i.namespaces.HasSynced() && i.armor.HasSynced() && i.cluster.HasSynced()
}

// Size is the number of policies cached.
func (i *Informers) Size() int {
	return len(i.armor.GetStore().ListKeys()) + len(i.cluster.GetStore().ListKeys())
}

// ArmorPolicies implements Store.
func (i *Informers) ArmorPolicies(namespace string) []*v1alpha1.ArmorPolicy {
	objs, _ := i.armor.GetIndexer().ByIndex(cache.NamespaceIndex, namespace) // the index always exists
	out := make([]*v1alpha1.ArmorPolicy, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*v1alpha1.ArmorPolicy); ok {
			out = append(out, p)
		}
	}
	return out
}

// ClusterArmorPolicies implements Store.
func (i *Informers) ClusterArmorPolicies() []*v1alpha1.ClusterArmorPolicy {
	objs := i.cluster.GetStore().List()
	out := make([]*v1alpha1.ClusterArmorPolicy, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*v1alpha1.ClusterArmorPolicy); ok {
			out = append(out, p)
		}
	}
	return out
}

// ClusterArmorPolicy implements Store.
func (i *Informers) ClusterArmorPolicy(name string) (*v1alpha1.ClusterArmorPolicy, bool) {
	o, ok, _ := i.cluster.GetStore().GetByKey(name)
	p, isPolicy := o.(*v1alpha1.ClusterArmorPolicy)
	return p, ok && isPolicy
}

// Namespace implements Store.
func (i *Informers) Namespace(name string) (*corev1.Namespace, bool) {
	o, ok, _ := i.namespaces.GetStore().GetByKey(name)
	ns, isNS := o.(*corev1.Namespace)
	return ns, ok && isNS
}
