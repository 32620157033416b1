package kube

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// The OCI annotations container runtimes set from the CRI: containerd's and CRI-O's.
var (
	containerdAnnotations = criAnnotations{
		typ: "io.kubernetes.cri.container-type", sandbox: "sandbox",
		namespace: "io.kubernetes.cri.sandbox-namespace", name: "io.kubernetes.cri.sandbox-name",
		uid: "io.kubernetes.cri.sandbox-uid", container: "io.kubernetes.cri.container-name",
	}
	crioAnnotations = criAnnotations{
		typ: "io.kubernetes.cri-o.ContainerType", sandbox: "sandbox",
		namespace: "io.kubernetes.pod.namespace", name: "io.kubernetes.pod.name",
		uid: "io.kubernetes.pod.uid", container: "io.kubernetes.container.name",
	}
)

type criAnnotations struct {
	typ, sandbox, namespace, name, uid, container string
}

// podRef is the pod and container an OCI spec's annotations name.
type podRef struct {
	Namespace, Name string
	UID             types.UID
	Container       string
	// Sandbox is set for the pod's sandbox (pause) container.
	Sandbox bool
}

// podOf reads the CRI's annotations; ok is false for a container the CRI did not make.
func podOf(annotations map[string]string) (podRef, bool) {
	for _, a := range []criAnnotations{containerdAnnotations, crioAnnotations} {
		ns, name := annotations[a.namespace], annotations[a.name]
		if ns == "" || name == "" {
			continue
		}
		return podRef{
			Namespace: ns, Name: name, UID: types.UID(annotations[a.uid]),
			Container: annotations[a.container], Sandbox: annotations[a.typ] == a.sandbox,
		}, true
	}
	return podRef{}, false
}

// podResolver maps a container to its profile through its pod: the label
// podarmor.io/profile, which the webhook set at admission. Pods come from an informer
// limited to the node; a pod the informer has not seen yet (it was bound a moment ago)
// is waited for briefly, then read from the API server.
type podResolver struct {
	pods cache.Indexer
	kube kubernetes.Interface
	// wait is how long a missing pod is waited for in the informer before the API
	// server is asked.
	wait time.Duration
	// containers maps the IDs of sandboxed containers resolved so far to their pods, for
	// events.
	containers sync.Map // string -> resolved
}

// resolved is a sandboxed container's pod, and when the resolver learnt it.
type resolved struct {
	ref  podRef
	when time.Time
}

// containerPod is the pod of a sandboxed container the resolver has seen.
func (r *podResolver) containerPod(id string) (podRef, bool) {
	v, ok := r.containers.Load(id)
	if !ok {
		return podRef{}, false
	}
	return v.(resolved).ref, true
}

// forget drops the containers keep does not keep, among those resolved before scanned
// (a list of running containers made then may miss those resolved since).
func (r *podResolver) forget(keep func(id string) bool, scanned time.Time) {
	r.containers.Range(func(k, v any) bool {
		if !keep(k.(string)) && v.(resolved).when.Before(scanned) {
			r.containers.Delete(k)
		}
		return true
	})
}

// Resolve implements registrar.Resolver.
func (r *podResolver) Resolve(ctx context.Context, req hook.Request) (string, error) {
	ref, ok := podOf(req.Annotations)
	if !ok {
		// Not a Kubernetes container (a runtime's own, or one started by hand): it is
		// sandboxed only if it asks to be.
		return req.Annotations[hook.AnnotationProfile], nil
	}
	if ref.Sandbox {
		return "", nil // the pause container runs no code of the pod's
	}
	pod, err := r.pod(ctx, ref)
	if err != nil {
		return "", err
	}
	profile := pod.Labels[v1alpha1.LabelProfile]
	if profile != "" {
		ref.UID = pod.UID
		r.containers.Store(req.ContainerID, resolved{ref, time.Now()})
	}
	return profile, nil
}

func (r *podResolver) pod(ctx context.Context, ref podRef) (*corev1.Pod, error) {
	deadline := time.Now().Add(r.wait)
	for {
		obj, exists, err := r.pods.GetByKey(ref.Namespace + "/" + ref.Name)
		if err == nil && exists {
			if pod := obj.(*corev1.Pod); ref.UID == "" || pod.UID == ref.UID {
				return pod, nil
			}
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	pod, err := r.kube.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("pod %s/%s does not exist", ref.Namespace, ref.Name)
	case err != nil:
		return nil, fmt.Errorf("pod %s/%s: not in the enforcer's cache and the API server did not answer: %w", ref.Namespace, ref.Name, err)
	case ref.UID != "" && pod.UID != ref.UID:
		return nil, fmt.Errorf("pod %s/%s is %s, not the container's pod %s", ref.Namespace, ref.Name, pod.UID, ref.UID)
	}
	return pod, nil
}

// containerIDs are the IDs (without the runtime prefix) of a pod's containers, init
// and ephemeral containers, as the kubelet reports them.
func containerIDs(pod *corev1.Pod) map[string]string {
	out := map[string]string{}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for _, s := range list {
			if _, id, ok := strings.Cut(s.ContainerID, "://"); ok && id != "" {
				out[id] = s.Name
			}
		}
	}
	return out
}

// podAnnotations are the CRI annotations of a pod's container, as containerd writes
// them: what the resolver reads.
func podAnnotations(pod *corev1.Pod, container string) map[string]string {
	a := containerdAnnotations
	return map[string]string{
		a.typ: "container", a.namespace: pod.Namespace, a.name: pod.Name,
		a.uid: string(pod.UID), a.container: container,
	}
}

// startedContainers are the names of containers by id, as containerd's event stream
// reported them starting, kept until a reconciliation no longer finds their processes.
type startedContainers struct {
	mu    sync.Mutex
	names map[string]startedContainer
}

type startedContainer struct {
	name string
	at   time.Time
}

func (s *startedContainers) add(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names == nil {
		s.names = map[string]startedContainer{}
	}
	s.names[id] = startedContainer{name: name, at: time.Now()}
}

func (s *startedContainers) name(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.names[id]
	return c.name, ok
}

// forget drops the containers reported before scanned whose processes the scan did not
// find (running): they have stopped. Those reported since may not have been scanned.
func (s *startedContainers) forget(running map[string]bool, scanned time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.names {
		if !running[id] && c.at.Before(scanned) {
			delete(s.names, id)
		}
	}
}
