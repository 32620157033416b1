package e2e

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// longName is the i-th container name of 63 bytes (a DNS label's limit) starting with p.
func longName(p string, i int) string {
	suffix := fmt.Sprintf("-%04d", i)
	return p + strings.Repeat("x", 63-len(p)-len(suffix)) + suffix
}

// TestHostilePodsThroughTheAPIServer sends valid pods built to stress the webhook through
// a real API server (docs/robustness.md): 300 init containers and 300 containers with
// names of 63 bytes, then 300 debug containers added to it; control characters in
// annotations; and 2,000 containers, whose seal does not fit in the annotations (stored
// unsealed from 1.30; refused naming metadata.annotations before, where each container's
// AppArmor profile is an annotation of its own).
func TestHostilePodsThroughTheAPIServer(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			e := startWebhookEnv(t, version)
			ctx := t.Context()
			shop := e.cp.CreateNamespace(t, map[string]string{v1alpha1.LabelEnable: "true"})
			e.createPolicy(t, &v1alpha1.ArmorPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: shop.Name}, Spec: enhanceSpec("web")}, &ready)
			profile := "ap." + shop.Name + ".web"
			e.waitForProfile(t, testPod(shop.Name, "web"), profile, "")
			// confined checks a container's profiles; before 1.30 a debug container
			// cannot get its AppArmor annotation (annotations do not change through the
			// ephemeralcontainers subresource), so only its seccomp profile is checked.
			confined := func(t *testing.T, pod *corev1.Pod, name string, sc *corev1.SecurityContext, debug bool) {
				t.Helper()
				c := &corev1.Container{Name: name, SecurityContext: sc}
				if got := seccompOf(c); got != "localhost/podarmor/"+profile+".json" {
					t.Fatalf("container %s: seccomp %q", name, got)
				}
				if debug && !e.fieldAware {
					return
				}
				if got := e.appArmorOf(pod, c); got != "localhost/podarmor-"+profile {
					t.Fatalf("container %s: AppArmor %q", name, got)
				}
			}

			t.Run("300 init containers, 300 containers and 300 debug containers with names of 63 bytes", func(t *testing.T) {
				pod := testPod(shop.Name, "web")
				pod.Spec.InitContainers, pod.Spec.Containers = nil, nil
				for i := range 300 {
					pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: longName("i", i), Image: "busybox"})
					pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: longName("c", i), Image: "busybox"})
				}
				got := e.cp.CreatePod(t, pod)
				for _, c := range append(got.Spec.InitContainers, got.Spec.Containers...) {
					confined(t, got, c.Name, c.SecurityContext, false)
				}
				if got.Annotations["podarmor.io/seal"] == "" {
					t.Error("a pod of 600 containers was not sealed")
				}
				for i := range 300 {
					got.Spec.EphemeralContainers = append(got.Spec.EphemeralContainers, corev1.EphemeralContainer{
						EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: longName("e", i), Image: "busybox",
							TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent},
					})
				}
				got, err := e.cp.Clientset.CoreV1().Pods(shop.Name).UpdateEphemeralContainers(ctx, got.Name, got, metav1.UpdateOptions{})
				if err != nil {
					t.Fatalf("add 300 debug containers: %v", err)
				}
				for _, c := range got.Spec.EphemeralContainers {
					confined(t, got, c.Name, c.SecurityContext, true)
				}
			})

			t.Run("control characters in annotations and paths", func(t *testing.T) {
				pod := testPod(shop.Name, "web")
				pod.Annotations = map[string]string{"example.com/ctl": "a\x00b\x01\x1b[31m\r\n\t\x7f", "podarmor.io/seal": "forged|;"}
				pod.Spec.Containers[0].WorkingDir = "/w\x01\n"
				got := e.cp.CreatePod(t, pod)
				confined(t, got, got.Spec.Containers[0].Name, got.Spec.Containers[0].SecurityContext, false)
				if got.Annotations["example.com/ctl"] != pod.Annotations["example.com/ctl"] {
					t.Errorf("annotation changed to %q", got.Annotations["example.com/ctl"])
				}
				if got.Annotations["podarmor.io/seal"] == "forged|;" {
					t.Error("the client's seal was kept")
				}
			})

			t.Run("2,000 containers with names of 63 bytes", func(t *testing.T) {
				pod := testPod(shop.Name, "web")
				pod.Spec.InitContainers, pod.Spec.Containers = nil, nil
				for i := range 2000 {
					pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: longName("c", i), Image: "busybox"})
				}
				if !e.fieldAware {
					_, err := e.cp.Clientset.CoreV1().Pods(shop.Name).Create(ctx, pod, metav1.CreateOptions{})
					if err == nil || !strings.Contains(err.Error(), "podarmor cannot confine this pod: metadata.annotations") {
						t.Fatalf("want podarmor's refusal naming metadata.annotations, got %v", err)
					}
					return
				}
				got := e.cp.CreatePod(t, pod)
				for _, c := range got.Spec.Containers {
					confined(t, got, c.Name, c.SecurityContext, false)
				}
				if _, sealed := got.Annotations["podarmor.io/seal"]; sealed {
					t.Error("a seal over the annotations' limit was stored")
				}
			})
		})
	}
}
