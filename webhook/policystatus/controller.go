// Package policystatus aggregates the enforcers' per-node reports (ArmorNodeStatus
// objects) into the status of each ArmorPolicy and ClusterArmorPolicy: the profile id,
// the generation described, how many nodes are ready or failed out of how many, and
// the Ready and RulesEnforced conditions. The webhook's Ready gate reads that status.
//
// One replica runs it, the one holding the webhook's leader Lease. Writes are batched:
// an event marks the policies it concerns in a rate-limited work queue keyed by policy,
// and a change of a node report waits BatchDelay for other nodes' changes, so that a
// thousand nodes loading a policy at once cost a handful of status writes per policy
// rather than a thousand. A queued policy is recomputed from the informers' caches and
// written only when its status changed, with server-side apply of the fields this
// package owns (field manager FieldManager), leaving other writers' conditions alone.
// docs/status.md describes the semantics.
package policystatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/profile"
)

// FieldManager is the server-side apply field manager of the aggregator's writes. It
// differs from the webhook's own (the Conflict condition), so neither removes the
// other's fields.
const FieldManager = "podarmor-policy-status"

// Defaults of Config.
const (
	DefaultBatchDelay = time.Second
	DefaultWorkers    = 2
	DefaultResync     = 10 * time.Minute
)

// Resources the aggregator reads and writes.
var (
	ArmorNodeStatuses    = v1alpha1.SchemeGroupVersion.WithResource("armornodestatuses")
	ArmorPolicies        = v1alpha1.SchemeGroupVersion.WithResource("armorpolicies")
	ClusterArmorPolicies = v1alpha1.SchemeGroupVersion.WithResource("clusterarmorpolicies")
)

// Config configures an Aggregator.
type Config struct {
	// Client reads ArmorNodeStatuses and policies and writes policy status. Required.
	Client dynamic.Interface
	// BatchDelay is how long a change of a node report waits before the policies it
	// concerns are recomputed, gathering the changes of other nodes meanwhile. Each
	// policy is written at most about once per BatchDelay while nodes report. Default
	// DefaultBatchDelay.
	BatchDelay time.Duration
	// Workers is how many policies are recomputed and written at once. Default
	// DefaultWorkers.
	Workers int
	// Resync is the informers' resync period. Default DefaultResync.
	Resync time.Duration
	// Now is the clock for condition transition times. Default time.Now.
	Now func() time.Time
	// Logger receives the aggregator's logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Client == nil {
		return errors.New("policy status: no Client")
	}
	if c.BatchDelay == 0 {
		c.BatchDelay = DefaultBatchDelay
	}
	if c.Workers == 0 {
		c.Workers = DefaultWorkers
	}
	if c.Resync == 0 {
		c.Resync = DefaultResync
	}
	if c.BatchDelay < 0 || c.Workers < 0 || c.Resync < 0 {
		return fmt.Errorf("policy status: negative BatchDelay %s, Workers %d or Resync %s", c.BatchDelay, c.Workers, c.Resync)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// key identifies a policy in the work queue.
type key struct {
	kind      v1alpha1.PolicyKind
	namespace string
	name      string
}

func (k key) String() string {
	if k.namespace == "" {
		return fmt.Sprintf("%s %s", k.kind, k.name)
	}
	return fmt.Sprintf("%s %s/%s", k.kind, k.namespace, k.name)
}

// storeKey is the key of the policy in its informer's store.
func (k key) storeKey() string {
	if k.namespace == "" {
		return k.name
	}
	return k.namespace + "/" + k.name
}

// Aggregator keeps policy status current from the node reports.
type Aggregator struct {
	cfg    Config
	log    *slog.Logger
	writes atomic.Int64
}

// New returns an Aggregator; Run does the work.
func New(cfg Config) (*Aggregator, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Aggregator{cfg: cfg, log: cfg.Logger.With("component", "policy-status")}, nil
}

// Writes counts the status writes made so far, over every Run.
func (a *Aggregator) Writes() int64 { return a.writes.Load() }

// term is one Run: its informers, queue and what it wrote.
type term struct {
	*Aggregator
	nodes, armor, cluster cache.SharedIndexInformer
	queue                 workqueue.TypedRateLimitingInterface[key]

	mu sync.Mutex
	// written remembers, per policy, the status last applied and the resourceVersion
	// the cache had then: until the cache moves past it, the cache's status is older
	// than what was written, and an equal recomputation must not write again.
	written map[key]writtenStatus
}

type writtenStatus struct {
	status   v1alpha1.PolicyStatus
	cachedRV string
}

// Run aggregates until ctx ends, then returns nil; the webhook calls it for each term
// as leader. It returns an error only when it cannot start.
func (a *Aggregator) Run(ctx context.Context) error {
	f := dynamicinformer.NewDynamicSharedInformerFactory(a.cfg.Client, a.cfg.Resync)
	t := &term{
		Aggregator: a,
		nodes:      f.ForResource(ArmorNodeStatuses).Informer(),
		armor:      f.ForResource(ArmorPolicies).Informer(),
		cluster:    f.ForResource(ClusterArmorPolicies).Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: ""}),
		written: map[key]writtenStatus{},
	}
	for _, inf := range []struct {
		inf cache.SharedIndexInformer
		gvr schema.GroupVersionResource
		new func() runtime.Object
	}{
		{t.nodes, ArmorNodeStatuses, func() runtime.Object { return &v1alpha1.ArmorNodeStatus{} }},
		{t.armor, ArmorPolicies, func() runtime.Object { return &v1alpha1.ArmorPolicy{} }},
		{t.cluster, ClusterArmorPolicies, func() runtime.Object { return &v1alpha1.ClusterArmorPolicy{} }},
	} {
		if err := inf.inf.SetTransform(typed(inf.gvr, inf.new)); err != nil {
			return fmt.Errorf("policy status: %s informer: %w", inf.gvr.Resource, err)
		}
	}
	if err := t.handleEvents(); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	defer t.queue.ShutDown()
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), t.nodes.HasSynced, t.armor.HasSynced, t.cluster.HasSynced) {
		return nil
	}
	a.log.Info("aggregating policy status", "nodes", len(t.nodes.GetStore().ListKeys()),
		"policies", len(t.armor.GetStore().ListKeys())+len(t.cluster.GetStore().ListKeys()))
	for range a.cfg.Workers {
		wg.Go(func() {
			for t.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	return nil
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

// handleEvents routes informer events into the queue. A new policy or a new
// generation is recomputed at once; anything else waits BatchDelay, and the queue keeps
// one entry per policy meanwhile. That includes the update each status write causes:
// recomputed at once, it would see the nodes that reported during the write and write
// again, so that a stream of reports would be written as fast as the API server
// answers instead of once per BatchDelay.
func (t *term) handleEvents() error {
	policyEvent := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if k, ok := policyKey(obj); ok {
			t.queue.Add(k)
		}
	}
	policies := cache.ResourceEventHandlerFuncs{
		AddFunc: policyEvent,
		UpdateFunc: func(oldObj, obj any) {
			o, ok1 := oldObj.(metav1.Object)
			n, ok2 := obj.(metav1.Object)
			k, ok := policyKey(obj)
			switch {
			case !ok:
			case ok1 && ok2 && o.GetGeneration() == n.GetGeneration():
				t.queue.AddAfter(k, t.cfg.BatchDelay)
			default:
				t.queue.Add(k)
			}
		},
		DeleteFunc: policyEvent,
	}
	if _, err := t.armor.AddEventHandler(policies); err != nil {
		return fmt.Errorf("policy status: %w", err)
	}
	if _, err := t.cluster.AddEventHandler(policies); err != nil {
		return fmt.Errorf("policy status: %w", err)
	}
	// A node that comes or goes changes every policy's node count; a report that
	// changes concerns the policies whose entries changed.
	_, err := t.nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { t.enqueueAllPolicies() },
		DeleteFunc: func(any) { t.enqueueAllPolicies() },
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*v1alpha1.ArmorNodeStatus)
			n, ok2 := newObj.(*v1alpha1.ArmorNodeStatus)
			if !ok1 || !ok2 {
				t.enqueueAllPolicies()
				return
			}
			for _, k := range changedPolicies(&o.Status, &n.Status) {
				t.queue.AddAfter(k, t.cfg.BatchDelay)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("policy status: %w", err)
	}
	return nil
}

// enqueueAllPolicies queues every policy after BatchDelay.
func (t *term) enqueueAllPolicies() {
	for _, inf := range []cache.SharedIndexInformer{t.armor, t.cluster} {
		for _, obj := range inf.GetStore().List() {
			if k, ok := policyKey(obj); ok {
				t.queue.AddAfter(k, t.cfg.BatchDelay)
			}
		}
	}
}

// changedPolicies lists the policies whose entries differ between two reports.
func changedPolicies(old, cur *v1alpha1.NodeReport) []key {
	entryKey := func(e *v1alpha1.NodePolicyStatus) key { return key{e.Kind, e.Namespace, e.Name} }
	before := make(map[key]*v1alpha1.NodePolicyStatus, len(old.Policies))
	for i := range old.Policies {
		before[entryKey(&old.Policies[i])] = &old.Policies[i]
	}
	var out []key
	for i := range cur.Policies {
		e := &cur.Policies[i]
		k := entryKey(e)
		if b, ok := before[k]; !ok || !equality.Semantic.DeepEqual(b, e) {
			out = append(out, k)
		}
		delete(before, k)
	}
	for k := range before {
		out = append(out, k)
	}
	return out
}

func policyKey(obj any) (key, bool) {
	switch p := obj.(type) {
	case *v1alpha1.ArmorPolicy:
		return key{v1alpha1.KindArmorPolicy, p.Namespace, p.Name}, true
	case *v1alpha1.ClusterArmorPolicy:
		return key{v1alpha1.KindClusterArmorPolicy, "", p.Name}, true
	}
	return key{}, false
}

// next handles one queued policy; it returns false when the queue shuts down.
func (t *term) next(ctx context.Context) bool {
	k, shutdown := t.queue.Get()
	if shutdown {
		return false
	}
	defer t.queue.Done(k)
	if err := t.sync(ctx, k); err != nil {
		if ctx.Err() == nil {
			t.log.Warn("policy status not written; retrying", "policy", k.String(), "error", err,
				"retries", t.queue.NumRequeues(k))
			t.queue.AddRateLimited(k)
		}
		return true
	}
	t.queue.Forget(k)
	return true
}

// sync recomputes the status of the policy k and writes it if it changed.
func (t *term) sync(ctx context.Context, k key) error {
	p, rv, ok := t.policy(k)
	if !ok {
		t.mu.Lock()
		delete(t.written, k)
		t.mu.Unlock()
		return nil // deleted: nothing to write
	}
	objs := t.nodes.GetStore().List()
	nodes := make([]*v1alpha1.ArmorNodeStatus, 0, len(objs))
	for _, o := range objs {
		if n, ok := o.(*v1alpha1.ArmorNodeStatus); ok {
			nodes = append(nodes, n)
		}
	}
	want := owned(Compute(p, nodes, metav1.NewTime(t.cfg.Now().Truncate(time.Second))))
	if equality.Semantic.DeepEqual(want, owned(p.Status)) {
		return nil
	}
	t.mu.Lock()
	w, seen := t.written[k]
	t.mu.Unlock()
	if seen && w.cachedRV == rv && equality.Semantic.DeepEqual(want, w.status) {
		return nil // written already; the cache has not caught up
	}
	if err := t.apply(ctx, k, want); err != nil {
		return err
	}
	t.writes.Add(1)
	t.mu.Lock()
	t.written[k] = writtenStatus{status: want, cachedRV: rv}
	t.mu.Unlock()
	ready := meta.FindStatusCondition(want.Conditions, ConditionReady)
	t.log.Debug("policy status written", "policy", k.String(), "generation", want.ObservedGeneration,
		"ready", ready.Status, "readyNodes", want.ReadyNodes, "failedNodes", want.FailedNodes, "totalNodes", want.TotalNodes)
	return nil
}

// policy reads the policy k from the cache, with its resourceVersion.
func (t *term) policy(k key) (Policy, string, bool) {
	inf := t.armor
	if k.kind == v1alpha1.KindClusterArmorPolicy {
		inf = t.cluster
	}
	obj, exists, err := inf.GetStore().GetByKey(k.storeKey())
	if err != nil || !exists {
		return Policy{}, "", false
	}
	switch o := obj.(type) {
	case *v1alpha1.ArmorPolicy:
		return Policy{
			Kind: v1alpha1.KindArmorPolicy, Namespace: o.Namespace, Name: o.Name, UID: o.UID,
			Generation: o.Generation, ProfileID: profile.ForArmorPolicy(o.Namespace, o.Name),
			Enforcers: o.Spec.Enforcers, Mode: o.Spec.Mode, Status: o.Status,
		}, o.ResourceVersion, true
	case *v1alpha1.ClusterArmorPolicy:
		return Policy{
			Kind: v1alpha1.KindClusterArmorPolicy, Name: o.Name, UID: o.UID,
			Generation: o.Generation, ProfileID: profile.ForClusterArmorPolicy(o.Name),
			Enforcers: o.Spec.Enforcers, Mode: o.Spec.Mode, Status: o.Status,
		}, o.ResourceVersion, true
	}
	return Policy{}, "", false
}

// owned keeps the fields of s the aggregator writes.
func owned(s v1alpha1.PolicyStatus) v1alpha1.PolicyStatus {
	out := v1alpha1.PolicyStatus{
		ObservedGeneration: s.ObservedGeneration,
		ProfileID:          s.ProfileID,
		ReadyNodes:         s.ReadyNodes,
		FailedNodes:        s.FailedNodes,
		TotalNodes:         s.TotalNodes,
	}
	for _, t := range []string{ConditionReady, ConditionRulesEnforced} {
		if c := meta.FindStatusCondition(s.Conditions, t); c != nil {
			out.Conditions = append(out.Conditions, *c)
		}
	}
	return out
}

// apply writes status to the policy k with server-side apply.
func (t *term) apply(ctx context.Context, k key, status v1alpha1.PolicyStatus) error {
	st, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", k, err)
	}
	md := map[string]any{"name": k.name}
	if k.namespace != "" {
		md["namespace"] = k.namespace
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": string(k.kind),
		"metadata": md, "status": st,
	}}
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	if k.kind == v1alpha1.KindClusterArmorPolicy {
		_, err = t.cfg.Client.Resource(ClusterArmorPolicies).ApplyStatus(ctx, k.name, obj, opts)
	} else {
		_, err = t.cfg.Client.Resource(ArmorPolicies).Namespace(k.namespace).ApplyStatus(ctx, k.name, obj, opts)
	}
	if err != nil {
		return fmt.Errorf("apply status of %s: %w", k, err)
	}
	return nil
}
