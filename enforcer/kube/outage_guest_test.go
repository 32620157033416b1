//go:build vmguest

package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// envOutage is the URL of the host test's switch for the guest's path to the API server
// (e2e/outage_test.go): GET /cut closes every connection and refuses new ones, GET
// /restore lets them through again.
const envOutage = "PODARMOR_TEST_OUTAGE_URL"

// outageFor is how long the API server stays unreachable: long enough for every watch
// of the enforcer to break and its retries to back off.
const outageFor = 30 * time.Second

// TestAPIServerOutage cuts the enforcer off from the API server while a sandboxed
// container keeps attempting a denied read and a new container of a pod the enforcer
// already knows starts: the read stays denied, the new container is registered with the
// last known policy, and once the API server is back a policy change reaches the node
// and its ArmorNodeStatus.
func TestAPIServerOutage(t *testing.T) {
	switchURL := os.Getenv(envOutage)
	if switchURL == "" {
		t.Fatalf("%s must be set (by e2e/outage_test.go)", envOutage)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	h := startAgent(t, ctx, io.Discard, slog.LevelInfo)
	id := "ap." + h.ns + ".web"
	if err := os.WriteFile("/other", []byte("other\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Both pods exist before the outage; "later" first, so that once the enforcer has
	// "first" (its watch delivers in order) it has "later" too.
	later := h.createPod(t, ctx, "later", id)
	first := h.createPod(t, ctx, "first", id)
	register := func(pod string, cid string, pid int, annotations map[string]string) hook.Response {
		t.Helper()
		resp, err := (&hook.Client{Socket: h.socket, Timeout: 10 * time.Second}).Do(ctx, hook.Request{
			Op: hook.OpRegister, ContainerID: cid, PID: pid, Status: "creating", Annotations: annotations,
		})
		if err != nil {
			t.Fatalf("register a container of pod %s: %v", pod, err)
		}
		if resp.Profile != id || resp.MountNamespace == 0 {
			t.Fatalf("register a container of pod %s: %+v, want profile %s", pod, resp, id)
		}
		return resp
	}
	c1 := startContainer(t, first, strings.Repeat("a1", 32))
	register("first", strings.Repeat("a1", 32), c1.Process.Pid, podAnnotations(first, "app"))
	mustDeny(t, c1.Process.Pid, "/secret")

	flip(t, switchURL+"/cut")
	cutAt := time.Now()
	// The guest's own client is cut off too: the outage is real.
	probe, pcancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := h.kube.CoreV1().Namespaces().Get(probe, h.ns, metav1.GetOptions{})
	pcancel()
	if err == nil {
		t.Fatal("the API server answered during the outage")
	}
	t.Logf("during the outage the API server gives: %v", err)

	attacks := 0
	attack := func(until time.Duration, pids ...int) {
		for time.Since(cutAt) < until {
			for _, pid := range pids {
				mustDeny(t, pid, "/secret")
				attacks++
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	attack(outageFor/2, c1.Process.Pid)
	// A new container of a known pod: registered with the policy the enforcer had.
	c2 := startContainer(t, later, strings.Repeat("b2", 32))
	register("later", strings.Repeat("b2", 32), c2.Process.Pid, podAnnotations(later, "app"))
	mustDeny(t, c2.Process.Pid, "/secret")
	attack(outageFor, c1.Process.Pid, c2.Process.Pid)
	select {
	case err := <-h.done:
		t.Fatalf("the enforcer stopped during the outage: %v", err)
	default:
	}
	t.Logf("%d reads denied during a %v outage", attacks, time.Since(cutAt).Round(time.Second))
	flip(t, switchURL+"/restore")
	restored := time.Now()

	// Back: a policy change (the file rule moves from /secret to /other) reaches both
	// containers and the node's report.
	var generation int64
	waitFor(t, 2*time.Minute, "the policy updated through the restored API server", func() bool {
		cur, err := h.policies.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false
		}
		upd := policyObject(t, h.ns, `"BPF","AppArmor","Seccomp"`, ``, "/other")
		upd.SetResourceVersion(cur.GetResourceVersion())
		got, err := h.policies.Update(ctx, upd, metav1.UpdateOptions{})
		if err != nil {
			return false
		}
		generation = got.GetGeneration()
		return true
	})
	t.Logf("API server answering again %v after the restore", time.Since(restored).Round(time.Millisecond))
	waitFor(t, 2*time.Minute, "the changed policy on both containers", func() bool {
		return canRead(c1.Process.Pid, "/secret") && canRead(c2.Process.Pid, "/secret") &&
			!canRead(c1.Process.Pid, "/other") && !canRead(c2.Process.Pid, "/other")
	})
	t.Logf("policy change enforced %v after the restore", time.Since(restored).Round(time.Millisecond))

	rest, err := clientcmd.BuildConfigFromFlags("", os.Getenv(envKubeconfig))
	if err != nil {
		t.Fatal(err)
	}
	statuses := dynamic.NewForConfigOrDie(rest).Resource(v1alpha1.SchemeGroupVersion.WithResource("armornodestatuses"))
	var last string
	waitFor(t, 2*time.Minute, "the node's report of the changed policy", func() bool {
		u, err := statuses.Get(ctx, testNode, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		pols, _, _ := unstructured.NestedSlice(u.Object, "status", "policies")
		last = fmt.Sprint(pols)
		for _, p := range pols {
			m, _ := p.(map[string]any)
			g, _, _ := unstructured.NestedInt64(m, "generation")
			if m["name"] == "web" && m["namespace"] == h.ns && g == generation {
				return true
			}
		}
		return false
	})
	t.Logf("node report caught up %v after the restore: %s", time.Since(restored).Round(time.Millisecond), last)

	// The Events of the denials: the event recorder retries, every 10 s, the writes the
	// outage refused, and the second of two alike Events is a patch that adds its series;
	// e2e/outage_test.go looks for that patch in the API server's audit log, so wait for
	// it rather than stop the enforcer with the retry still pending.
	waitFor(t, 2*time.Minute, "a denial's Event patched with its series after the outage", func() bool {
		evs, err := h.kube.EventsV1().Events(h.ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=PodarmorDenied"})
		if err != nil {
			last = err.Error()
			return false
		}
		for _, e := range evs.Items {
			if e.Series != nil {
				last = fmt.Sprintf("%s: series of %d", e.Name, e.Series.Count)
				return true
			}
		}
		last = fmt.Sprintf("%d Events, none with a series", len(evs.Items))
		return false
	})
	t.Logf("Events %v after the restore: %s", time.Since(restored).Round(time.Millisecond), last)

	cancel()
	<-h.done
}

// flip calls the host test's switch.
func flip(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
}
