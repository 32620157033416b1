package status

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/enforcer/nodestatus"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// TestNodeStatusWriter runs the enforcer's writer against the API server through a
// proxy that the test can cut: it creates the node's object owned by the Node,
// coalesces a burst of reports into a few writes, writes nothing for a report that did
// not change, and writes the latest report once the API server is reachable again.
func TestNodeStatusWriter(t *testing.T) {
	for _, version := range framework.Versions(t) {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			node := createNode(t, cp, "node-a")

			host := strings.TrimPrefix(cp.Config.Host, "https://")
			px := startProxy(t, host)
			cfg := rest.CopyConfig(cp.Config)
			cfg.Host = "https://" + px.addr
			cfg.Timeout = 5 * time.Second
			const interval = 500 * time.Millisecond
			w, err := nodestatus.New(dynamicClient(t, cfg), node.Name, nodestatus.Options{
				Interval: interval, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
				Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = w.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			started := metav1.NewTime(time.Now().Truncate(time.Second))
			report := func(version string) v1alpha1.NodeReport {
				return v1alpha1.NodeReport{
					Enforcer: v1alpha1.EnforcerInfo{Version: version, StartTime: started},
					Features: v1alpha1.NodeFeatures{KernelRelease: "6.12.0", BPFLSM: true, AppArmor: true, AppArmorABI: "4.0", Seccomp: true},
					Policies: []v1alpha1.NodePolicyStatus{
						loaded(v1alpha1.KindClusterArmorPolicy, "", "default", 1, v1alpha1.EnforcerBPF),
						withResult(loaded(v1alpha1.KindArmorPolicy, "shop", "web", 2, v1alpha1.EnforcerBPF, v1alpha1.EnforcerAppArmor),
							v1alpha1.EnforcerAppArmor, v1alpha1.LoadFailed, "apparmor_parser exited 1"),
					},
				}
			}
			hasVersion := func(v string) func(ctx context.Context) (bool, error) {
				return func(ctx context.Context) (bool, error) {
					got := &v1alpha1.ArmorNodeStatus{}
					if err := cp.Client.Get(ctx, clientKey(node.Name), got); err != nil {
						return false, client404(err)
					}
					return got.Status.Enforcer.Version == v, nil
				}
			}

			t.Run("the first report creates the node's object, owned by the Node", func(t *testing.T) {
				w.Set(report("v0"))
				waitFor(t, "the node status object", hasVersion("v0"))
				got := &v1alpha1.ArmorNodeStatus{}
				if err := cp.Client.Get(t.Context(), clientKey(node.Name), got); err != nil {
					t.Fatal(err)
				}
				if len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != node.UID || got.OwnerReferences[0].Kind != "Node" {
					t.Errorf("owner references %+v, want the Node %s (%s)", got.OwnerReferences, node.Name, node.UID)
				}
				s := got.Status.Summary
				if s.Policies != 2 || s.Loaded != 1 || s.Failed != 1 {
					t.Errorf("summary %+v, want 2 policies, 1 loaded, 1 failed", s)
				}
				if p := got.Status.Policies; len(p) != 2 || p[0].Kind != v1alpha1.KindArmorPolicy {
					t.Errorf("policies %+v, want 2 sorted by kind", p)
				}
			})

			t.Run("a burst of reports is coalesced into few writes", func(t *testing.T) {
				watcher, err := dynamicClient(t, cp.Config).Resource(nodestatus.ArmorNodeStatuses).Watch(t.Context(),
					metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", node.Name).String()})
				if err != nil {
					t.Fatal(err)
				}
				defer watcher.Stop()
				before := w.Stats().Writes
				const sets = 200
				start := time.Now()
				for i := range sets {
					w.Set(report(fmt.Sprintf("burst-%d", i)))
					time.Sleep(5 * time.Millisecond) // a report changing every 5 ms
				}
				waitFor(t, "the last report of the burst", hasVersion(fmt.Sprintf("burst-%d", sets-1)))
				elapsed := time.Since(start)
				writes := w.Stats().Writes - before
				// One write per interval at most, plus the one that may start at once and
				// the one that carries the last report.
				bound := int64(elapsed/interval) + 2
				t.Logf("%d reports in %s became %d writes (bound %d)", sets, elapsed.Round(time.Millisecond), writes, bound)
				if writes < 1 || writes > bound {
					t.Errorf("%d writes for %d reports in %s; want 1 to %d", writes, sets, elapsed, bound)
				}
				// The API server saw the same number of modifications.
				seen := int64(0)
				timeout := time.After(5 * time.Second)
			count:
				for seen < writes {
					select {
					case ev, ok := <-watcher.ResultChan():
						if !ok {
							break count
						}
						if ev.Type == watch.Modified {
							seen++
						}
					case <-timeout:
						break count
					}
				}
				if seen != writes {
					t.Errorf("the API server saw %d modifications, the writer counted %d writes", seen, writes)
				}
			})

			t.Run("a report equal to the written one is not written", func(t *testing.T) {
				writes, sets := w.Stats().Writes, w.Stats().Sets
				w.Set(report("burst-199")) // the last report of the burst, written above
				if w.Pending() || w.Stats().Sets != sets {
					t.Errorf("setting the report already written left a write pending")
				}
				if got := w.Stats().Writes; got != writes {
					t.Errorf("writes went from %d to %d for an unchanged report", writes, got)
				}
			})

			t.Run("the latest report is written once the API server is back", func(t *testing.T) {
				px.Stop()
				failures := w.Stats().Failures
				w.Set(report("during-outage-1"))
				w.Set(report("during-outage-2"))
				waitFor(t, "the writer to fail against the unreachable server", func(context.Context) (bool, error) {
					return w.Stats().Failures >= failures+2, nil
				})
				got := &v1alpha1.ArmorNodeStatus{}
				if err := cp.Client.Get(t.Context(), clientKey(node.Name), got); err != nil {
					t.Fatal(err)
				}
				if v := got.Status.Enforcer.Version; strings.HasPrefix(v, "during-outage") {
					t.Fatalf("the object has %q although the API server was unreachable through the proxy", v)
				}
				if !w.Pending() {
					t.Fatal("the report is not pending after failed writes")
				}
				px.Start()
				waitFor(t, "the report set during the outage", hasVersion("during-outage-2"))
				waitFor(t, "nothing pending", func(context.Context) (bool, error) { return !w.Pending(), nil })
				t.Logf("writer stats: %+v", w.Stats())
			})

			t.Run("a deleted object is written again at the next write", func(t *testing.T) {
				if err := cp.Client.Delete(t.Context(), &v1alpha1.ArmorNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: node.Name}}); err != nil {
					t.Fatal(err)
				}
				w.Set(report("after-delete"))
				waitFor(t, "the object to be created again", hasVersion("after-delete"))
			})
		})
	}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
