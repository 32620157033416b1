package certs

import (
	"context"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// leadingRecorder is a WhileLeading that records which replica leads now.
type leadingRecorder struct {
	mu      sync.Mutex
	leading map[string]bool
	terms   map[string]int
}

func (r *leadingRecorder) run(id string) func(context.Context) {
	return func(term context.Context) {
		r.mu.Lock()
		r.leading[id] = true
		r.terms[id]++
		r.mu.Unlock()
		<-term.Done()
		r.mu.Lock()
		r.leading[id] = false
		r.mu.Unlock()
	}
}

func (r *leadingRecorder) state(id string) (leading bool, terms int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading[id], r.terms[id]
}

func TestWhileLeadingRunsOnlyOnTheLeader(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	rec := &leadingRecorder{leading: map[string]bool{}, terms: map[string]int{}}
	cfgA := testConfig(t, client, clock, "a")
	cfgA.WhileLeading = rec.run("a")
	stopA := run(t, newTestManager(t, cfgA))
	eventually(t, "a leads and runs WhileLeading", func() bool { l, _ := rec.state("a"); return l })
	cfgB := testConfig(t, client, clock, "b")
	cfgB.WhileLeading = rec.run("b")
	run(t, newTestManager(t, cfgB))

	stopA()
	if l, _ := rec.state("a"); l {
		t.Error("a's WhileLeading still runs after its Run returned")
	}
	eventually(t, "b takes over and runs WhileLeading", func() bool { l, _ := rec.state("b"); return l })
	if _, terms := rec.state("a"); terms != 1 {
		t.Errorf("a led %d terms, want 1", terms)
	}
}

func TestWhileLeadingInFileModeElectsWithoutBookkeeping(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	rec := &leadingRecorder{leading: map[string]bool{}, terms: map[string]int{}}
	cfg := testConfig(t, client, newFakeClock(), "a")
	cfg.CertFile, cfg.KeyFile = "/nonexistent/tls.crt", "/nonexistent/tls.key"
	cfg.WhileLeading = rec.run("a")
	run(t, newTestManager(t, cfg))
	eventually(t, "a leads in file mode", func() bool { l, _ := rec.state("a"); return l })
	if h := leaseHolder(t, client); h != "a" {
		t.Errorf("lease held by %q, want a", h)
	}
	if s, _ := client.CoreV1().Secrets(testNamespace).List(t.Context(), metav1.ListOptions{}); len(s.Items) != 0 {
		t.Errorf("file mode wrote %d Secrets", len(s.Items))
	}
}

func TestWhileLeadingInFileModeNeedsAClient(t *testing.T) {
	_, err := New(Config{CertFile: "c", KeyFile: "k", WhileLeading: func(context.Context) {}})
	if err == nil {
		t.Fatal("file mode with WhileLeading and no Client was accepted")
	}
}
