package framework

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// DefaultTimeout bounds the wait helpers and a single API call of the helpers. Waits in
// tests are for something to happen, never a sleep: pass a condition to WaitFor.
const DefaultTimeout = 30 * time.Second

// CreateNamespace creates a namespace named "e2e-" plus a random suffix, with labels
// (nil for none), and its "default" ServiceAccount. A real cluster's controller-manager
// makes that account; without it the ServiceAccount admission plugin rejects every pod
// of the namespace.
func (cp *ControlPlane) CreateNamespace(t testing.TB, labels map[string]string) *corev1.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-", Labels: labels}}
	if err := cp.Client.Create(ctx, ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}
	if err := cp.Client.Create(ctx, sa); err != nil {
		t.Fatalf("create service account %s/default: %v", ns.Name, err)
	}
	return ns
}

// LabelNamespace sets labels on an existing namespace, keeping its other labels; an
// empty value removes the label. Opt a namespace into podarmor with
//
//	cp.LabelNamespace(t, ns.Name, map[string]string{v1alpha1.LabelEnable: "true"})
func (cp *ControlPlane) LabelNamespace(t testing.TB, name string, labels map[string]string) *corev1.Namespace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	set := map[string]*string{}
	for k, v := range labels {
		if v == "" {
			set[k] = nil // null deletes the key in a merge patch
		} else {
			set[k] = &v
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": set}})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := cp.Client.Patch(ctx, ns, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatalf("label namespace %s: %v", name, err)
	}
	return ns
}

// EnableNamespace labels a namespace podarmor.io/enable=true, which opts it into
// podarmor.
func (cp *ControlPlane) EnableNamespace(t testing.TB, name string) *corev1.Namespace {
	t.Helper()
	return cp.LabelNamespace(t, name, map[string]string{v1alpha1.LabelEnable: "true"})
}

// CreatePod creates pod and returns the object as the API server stored it, after every
// admission plugin and webhook changed it. The test fails if the pod is rejected; to see
// a rejection, call cp.Client.Create yourself and look at the error.
func (cp *ControlPlane) CreatePod(t testing.TB, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	stored := pod.DeepCopy()
	if err := cp.Client.Create(ctx, stored); err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, podName(pod), err)
	}
	return stored
}

// DryRunCreate sends obj through creation with dryRun=All: admission runs, webhooks
// included, and nothing is stored. On success obj holds what would have been stored; on
// rejection the API error is returned (see StatusCauses) and obj is unchanged.
func (cp *ControlPlane) DryRunCreate(t testing.TB, obj client.Object) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	// The client decodes the server's answer into obj only on success.
	return cp.Client.Create(ctx, obj, client.DryRunAll)
}

// WaitFor calls cond every 200 ms until it returns true, and fails the test if that
// takes longer than timeout (DefaultTimeout if zero) or cond returns an error. what
// describes the awaited state for the failure message: "the pod to be labelled".
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := poll(ctx, cond); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		t.Fatalf("wait for %s: %v", what, err)
	}
}

// WaitForObject gets key into obj until done(obj) holds, failing the test after timeout
// (DefaultTimeout if zero). A NotFound object is waited for, not an error.
func (cp *ControlPlane) WaitForObject(t testing.TB, timeout time.Duration, key client.ObjectKey, obj client.Object, done func() bool) {
	t.Helper()
	what := fmt.Sprintf("%T %s", obj, key)
	WaitFor(t, timeout, what, func(ctx context.Context) (bool, error) {
		if err := cp.Client.Get(ctx, key, obj); err != nil {
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		return done(), nil
	})
}

// WaitForDeletion waits until the object named key is gone (a Get of obj answers
// NotFound), failing the test after timeout (DefaultTimeout if zero).
func (cp *ControlPlane) WaitForDeletion(t testing.TB, timeout time.Duration, key client.ObjectKey, obj client.Object) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%T %s to be deleted", obj, key), func(ctx context.Context) (bool, error) {
		err := cp.Client.Get(ctx, key, obj)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// StatusCauses returns the field-level causes of an API error (nil for other errors):
// for an invalid object, one cause per rejected field with its path (Field, e.g.
// "spec.customRules.network[0].egress.ports[0]") and message.
func StatusCauses(err error) []metav1.StatusCause {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return nil
	}
	return status.Status().Details.Causes
}

func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName + "*"
}
