//go:build vmguest

package bpf

// Helpers of the guest tests: a sandbox is a runc container registered with a profile
// through the OCI hook (guest_runc_test.go), whose process is this test binary in helper
// mode: it tries one operation and reports the outcome ("ok" or the errno's name) as its
// output and exit code (0 ok, 1 EPERM, 2 another error).

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/compile/bpf"
)

var (
	pins   atomic.Int32
	shared *Enforcer
)

// enforcer returns the enforcer the tests share: loading takes seconds under emulation.
// Tests use profiles of their own and never unload it. Its events are collected for
// waitEvent.
func enforcer(t *testing.T) *Enforcer {
	t.Helper()
	if shared == nil {
		e, err := Load(Options{PinDir: "/sys/fs/bpf/podarmor-shared", EventsPerSecond: 1000})
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		ch, err := e.Events(context.Background())
		if err != nil {
			t.Fatalf("Events: %v", err)
		}
		go func() {
			for ev := range ch {
				eventsMu.Lock()
				events = append(events, ev)
				eventsMu.Unlock()
			}
		}()
		shared = e
		serveHook(t, e, true)
	}
	return shared
}

var (
	eventsMu sync.Mutex
	events   []Event
)

// waitEvent waits up to 10 s for an event for which match holds.
func waitEvent(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		eventsMu.Lock()
		for _, ev := range events {
			if match(ev) {
				eventsMu.Unlock()
				return ev
			}
		}
		eventsMu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no event: %s", what)
	return Event{}
}

// decided sums a rule's counted decisions of one action over every hook.
func decided(c map[Decision]uint64, profile, rule string, action tables.Action) uint64 {
	var n uint64
	for d, v := range c {
		if d.Profile == profile && d.Rule == rule && d.Action == action {
			n += v
		}
	}
	return n
}

// load loads the enforcer into a fresh pin directory and unloads it at the end of the test.
func load(t *testing.T) *Enforcer {
	t.Helper()
	return loadWith(t, Options{})
}

// loadWith is load with options; their PinDir is set to the fresh directory.
func loadWith(t *testing.T, opts Options) *Enforcer {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("podarmor-test-%d", pins.Add(1)))
	opts.PinDir = dir
	e, err := Load(opts)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	serveHook(t, e, false)
	t.Cleanup(func() {
		if err := e.Unpin(); err != nil {
			t.Errorf("Unpin: %v", err)
		}
		e.Close()
		os.RemoveAll(dir)
	})
	return e
}

// compilePolicy compiles an ArmorPolicy written in YAML to its BPF profile.
func compilePolicy(t *testing.T, doc string) *bpf.Profile {
	t.Helper()
	var p v1alpha1.ArmorPolicy
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatalf("policy: %v", err)
	}
	if p.Namespace == "" {
		p.Namespace = "test"
	}
	res, errs := compile.Compile(compile.FromArmorPolicy(&p), compile.Options{})
	if len(errs) > 0 {
		t.Fatalf("compile: %v", errs.ToAggregate())
	}
	for _, prof := range res.Profiles {
		if prof.Enforcer != v1alpha1.EnforcerBPF {
			continue
		}
		var bp bpf.Profile
		if err := json.Unmarshal(prof.Content, &bp); err != nil {
			t.Fatalf("decode BPF profile: %v", err)
		}
		return &bp
	}
	t.Fatalf("policy has no BPF profile")
	return nil
}

// policy is the YAML of an ArmorPolicy for the BPF enforcer in EnhanceProtect mode
// (runtime-default rules included) with the given spec lines added.
func policy(name, spec string) string {
	return fmt.Sprintf(`apiVersion: podarmor.io/v1alpha1
kind: ArmorPolicy
metadata:
  name: %s
  namespace: test
spec:
  target:
    selector: {}
  enforcers: [BPF]
  mode: EnhanceProtect
%s`, name, spec)
}

// install compiles and loads a policy and returns its profile ID.
func install(t *testing.T, e *Enforcer, doc string) string {
	t.Helper()
	p := compilePolicy(t, doc)
	if err := e.SetProfile(p); err != nil {
		t.Fatalf("SetProfile %s: %v", p.ProfileID, err)
	}
	return p.ProfileID
}

type outcome struct {
	out  string
	code int
}

func (o outcome) String() string { return fmt.Sprintf("exit %d: %s", o.code, strings.TrimSpace(o.out)) }

func self(t *testing.T) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// inSandbox runs helper operation op in a runc container registered with profile through
// e's hook server (an unconfined container when profile is ""), and returns the outcome.
// The operation runs in a new process of the test's sandbox for the profile.
func inSandbox(t *testing.T, e *Enforcer, profile string, op ...string) outcome {
	t.Helper()
	return inBox(t, box{profile: profile, socket: hookSocket(t, e)}, op...)
}

// onHost runs a helper operation directly, outside any sandbox.
func onHost(t *testing.T, op ...string) outcome {
	t.Helper()
	cmd := exec.Command(self(t), op...)
	cmd.Env = append(os.Environ(), "PODARMOR_HELPER=1")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("host: %v", err)
	}
	return outcome{string(out), code}
}

// denied and allowed check an outcome.
func denied(t *testing.T, what string, o outcome) {
	t.Helper()
	if o.code != 1 || !strings.Contains(o.out, "EPERM") {
		t.Errorf("%s: want EPERM, got %v", what, o)
	}
}

func allowed(t *testing.T, what string, o outcome) {
	t.Helper()
	if o.code != 0 {
		t.Errorf("%s: want success, got %v", what, o)
	}
}

// write creates a file on the VM and in the containers' root file system.
func write(t *testing.T, path, content string) {
	t.Helper()
	containerRoot(t)
	for _, p := range []string{path, inRoot(path)} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// mkdirs creates directories on the VM and in the containers' root file system.
func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	containerRoot(t)
	for _, d := range dirs {
		for _, p := range []string{d, inRoot(d)} {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// symlink creates a symbolic link on the VM and in the containers' root file system;
// an existing one is left.
func symlink(t *testing.T, target, link string) {
	t.Helper()
	containerRoot(t)
	for _, p := range []string{link, inRoot(link)} {
		if err := os.Symlink(target, p); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
	}
}

// busyboxAt copies the VM's busybox to paths on the VM and in the containers' root file
// system (only there when rootOnly).
func busyboxAt(t *testing.T, rootOnly bool, paths ...string) {
	t.Helper()
	containerRoot(t)
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range paths {
		where := []string{name, inRoot(name)}
		if rootOnly {
			where = where[1:]
		}
		for _, p := range where {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, busybox, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// both applies f to a path on the VM and in the containers' root file system.
func both(t *testing.T, path string, f func(string) error) {
	t.Helper()
	containerRoot(t)
	for _, p := range []string{path, inRoot(path)} {
		if err := f(p); err != nil {
			t.Fatal(err)
		}
	}
}
