package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLintFindsProblems(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "podarmor_test_requests", Help: "Requests."}))
	problems, err := Lint(reg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(problems, "podarmor_test_requests: counter metrics should have \"_total\" suffix") {
		t.Errorf("Lint of a counter without _total = %q, want the missing suffix reported", problems)
	}
}

func TestGatherWantsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podarmor_test_total", Help: "Tests."}, []string{"b", "a"})
	reg.MustRegister(vec, prometheus.NewGauge(prometheus.GaugeOpts{Name: "other_gauge", Help: "Not ours."}))
	if got, err := Gather(reg, "podarmor_"); err != nil || len(got) != 0 {
		// A vector without series is not gathered at all: nothing to report, and
		// the inventory check then names it as gone.
		t.Fatalf("Gather with an untouched vector = %v, %v; want nothing", got, err)
	}
	vec.WithLabelValues("x", "y").Inc()
	got, err := Gather(reg, "podarmor_")
	if err != nil {
		t.Fatal(err)
	}
	want := Metric{Name: "podarmor_test_total", Type: "counter", Help: "Tests.", Labels: []string{"a", "b"}}
	if len(got) != 1 || got[0].Name != want.Name || got[0].Type != want.Type || strings.Join(got[0].Labels, ",") != "a,b" {
		t.Errorf("Gather = %+v, want [%+v]", got, want)
	}
}

func TestCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.json")
	ms := []Metric{{Name: "podarmor_a_total", Type: "counter", Help: "A."}}
	if err := Check(path, ms, true); err != nil {
		t.Fatal(err)
	}
	if err := Check(path, ms, false); err != nil {
		t.Errorf("Check after update: %v", err)
	}
	renamed := []Metric{{Name: "podarmor_b_total", Type: "counter", Help: "A."}}
	err := Check(path, renamed, false)
	if err == nil || !strings.Contains(err.Error(), "new: podarmor_b_total") || !strings.Contains(err.Error(), "gone: podarmor_a_total") {
		t.Errorf("Check of a renamed metric = %v, want it named as new and gone", err)
	}
	if data, _ := os.ReadFile(path); !strings.Contains(string(data), "podarmor_a_total") {
		t.Error("Check without update rewrote the file")
	}
}

func TestLoad(t *testing.T) {
	for _, b := range Binaries {
		ms, err := Load(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			t.Errorf("inventory of %s is empty", b)
		}
		for _, m := range ms {
			if !strings.HasPrefix(m.Name, "podarmor_"+b+"_") {
				t.Errorf("%s's inventory has %s, outside podarmor_%s_", b, m.Name, b)
			}
		}
	}
	if _, err := Load("nope"); err == nil {
		t.Error("Load of an unknown binary succeeded")
	}
}
