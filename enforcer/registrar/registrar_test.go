package registrar

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// fakeRegistry records registrations.
type fakeRegistry struct {
	regs map[uint32]string
	late map[uint32]bool
}

func (f *fakeRegistry) Register(ns uint32, profile string, late bool) error {
	if profile == "broken" {
		return fmt.Errorf("bpf: update map containers: no space")
	}
	f.regs[ns], f.late[ns] = profile, late
	return nil
}

func (f *fakeRegistry) Unregister(ns uint32) error {
	delete(f.regs, ns)
	return nil
}

func (f *fakeRegistry) Registered() (map[uint32]tables.Registration, error) {
	out := map[uint32]tables.Registration{}
	for ns := range f.regs {
		out[ns] = tables.Registration{ID: tables.Identity{Container: ns}}
	}
	return out, nil
}

// annotationResolver is the standalone enforcer's rule: a fixed mapping by container ID,
// then the podarmor.io/profile annotation.
func annotationResolver(mapped map[string]string) Resolver {
	return func(_ context.Context, req hook.Request) (string, error) {
		if p, ok := mapped[req.ContainerID]; ok {
			return p, nil
		}
		return req.Annotations[hook.AnnotationProfile], nil
	}
}

func profileSet(m map[string]bool) Profiles {
	return func(id string) (bool, bool, error) {
		b, ok := m[id]
		return ok, b, nil
	}
}

func newTestRegistrar(t *testing.T, reg Registry, profiles map[string]bool, mapped map[string]string, proc string) *Registrar {
	t.Helper()
	r, err := New(Config{Registry: reg, Resolve: annotationResolver(mapped), Profiles: profileSet(profiles), Proc: proc, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// fakeProc makes a procfs with the given mount namespaces by pid; the test's own pid is
// in namespace 1000 (the host's).
func fakeProc(t *testing.T, pids map[int]uint32) string {
	t.Helper()
	dir := t.TempDir()
	pids[os.Getpid()] = 1000
	for pid, ns := range pids {
		d := filepath.Join(dir, strconv.Itoa(pid), "ns")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(fmt.Sprintf("mnt:[%d]", ns), filepath.Join(d, "mnt")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestRegistrar(t *testing.T) {
	profiles := map[string]bool{"ap.default.bpf": true, "ap.default.aa": false, "broken": true}
	annotated := func(id string, pid int, profile string) hook.Request {
		return hook.Request{Op: hook.OpRegister, ContainerID: id, PID: pid, Annotations: map[string]string{hook.AnnotationProfile: profile}}
	}
	tests := map[string]struct {
		reqs     []hook.Request
		wantErr  string
		wantResp hook.Response
		wantRegs map[uint32]string
	}{
		"an annotated container is registered with its profile": {
			reqs:     []hook.Request{annotated("c1", 10, "ap.default.bpf")},
			wantResp: hook.Response{Profile: "ap.default.bpf", MountNamespace: 2001},
			wantRegs: map[uint32]string{2001: "ap.default.bpf"},
		},
		"the configured mapping comes before the annotation": {
			reqs:     []hook.Request{annotated("mapped", 10, "ap.default.aa")},
			wantResp: hook.Response{Profile: "ap.default.bpf", MountNamespace: 2001},
			wantRegs: map[uint32]string{2001: "ap.default.bpf"},
		},
		"a container without a profile is left alone": {
			reqs:     []hook.Request{{Op: hook.OpRegister, ContainerID: "c1", PID: 10}},
			wantRegs: map[uint32]string{},
		},
		"a profile without BPF needs no registration": {
			reqs:     []hook.Request{annotated("c1", 10, "ap.default.aa")},
			wantResp: hook.Response{Profile: "ap.default.aa"},
			wantRegs: map[uint32]string{},
		},
		"a profile that is not loaded is refused": {
			reqs:    []hook.Request{annotated("c1", 10, "ap.default.other")},
			wantErr: "profile ap.default.other is not loaded on this node",
		},
		"a container in the node's mount namespace is refused": {
			reqs:    []hook.Request{annotated("c1", 11, "ap.default.bpf")},
			wantErr: "shares the node's mount namespace",
		},
		"a process that is gone is refused": {
			reqs:    []hook.Request{annotated("c1", 99, "ap.default.bpf")},
			wantErr: "mount namespace of pid 99",
		},
		"a failed map update is refused": {
			reqs:    []hook.Request{annotated("c1", 10, "broken")},
			wantErr: "no space",
		},
		"a repeated hook is answered without registering again": {
			reqs:     []hook.Request{annotated("c1", 10, "ap.default.bpf"), annotated("c1", 10, "ap.default.bpf")},
			wantResp: hook.Response{Profile: "ap.default.bpf", MountNamespace: 2001},
			wantRegs: map[uint32]string{2001: "ap.default.bpf"},
		},
		"another container in a registered namespace is refused": {
			reqs:    []hook.Request{annotated("c1", 10, "ap.default.bpf"), annotated("c2", 12, "ap.default.bpf")},
			wantErr: "mount namespace 2001 is registered for container c1",
		},
		"poststop unregisters": {
			reqs:     []hook.Request{annotated("c1", 10, "ap.default.bpf"), {Op: hook.OpUnregister, ContainerID: "c1"}},
			wantResp: hook.Response{Profile: "ap.default.bpf", MountNamespace: 2001},
			wantRegs: map[uint32]string{},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			proc := fakeProc(t, map[int]uint32{10: 2001, 11: 1000, 12: 2001})
			fake := &fakeRegistry{regs: map[uint32]string{}, late: map[uint32]bool{}}
			r := newTestRegistrar(t, fake, profiles, map[string]string{"mapped": "ap.default.bpf"}, proc)
			var resp hook.Response
			var err error
			for _, req := range tc.reqs {
				resp, err = r.Handle(context.Background(), req)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp != tc.wantResp {
				t.Errorf("response %+v, want %+v", resp, tc.wantResp)
			}
			if fmt.Sprint(fake.regs) != fmt.Sprint(tc.wantRegs) {
				t.Errorf("registrations %v, want %v", fake.regs, tc.wantRegs)
			}
			for ns := range fake.regs {
				if r.ContainerOf(ns) == "" || fake.late[ns] {
					t.Errorf("namespace %d: container %q, late %v", ns, r.ContainerOf(ns), fake.late[ns])
				}
			}
		})
	}
}

func TestAdoptUnprotected(t *testing.T) {
	proc := fakeProc(t, map[int]uint32{10: 2001, 11: 2002})
	fake := &fakeRegistry{regs: map[uint32]string{}, late: map[uint32]bool{}}
	r := newTestRegistrar(t, fake, map[string]bool{"p": true}, nil, proc)
	dir := t.TempDir()
	for id, rec := range map[string]struct{ pid, ns int }{"alive": {10, 2001}, "gone": {77, 0}, "pid reused": {11, 2009}} {
		data := fmt.Sprintf(`{"version":1,"op":"register","containerID":%q,"pid":%d,"annotations":{"podarmor.io/profile":"p"},"time":"2026-01-01T00:00:00Z","mountNamespace":%d}`, id, rec.pid, rec.ns)
		if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.AdoptUnprotected(context.Background(), dir)
	if fake.regs[2001] != "p" || !fake.late[2001] || len(fake.regs) != 1 {
		t.Errorf("registrations %v (late %v), want namespace 2001 late with p", fake.regs, fake.late)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("records left: %v", left)
	}
}

func TestReconcile(t *testing.T) {
	// Processes: 10 and 11 are two containers' inits, 12 a process in 10's namespace,
	// 13 a container of a pod that is not sandboxed.
	proc := fakeProc(t, map[int]uint32{10: 2001, 11: 2002, 12: 2001, 13: 2003})
	fake := &fakeRegistry{
		// 2001 was registered by a previous enforcer; 2999 belongs to a container that
		// is gone.
		regs: map[uint32]string{2001: "p", 2999: "p"},
		late: map[uint32]bool{},
	}
	r := newTestRegistrar(t, fake, map[string]bool{"p": true, "missing-bpf": true}, nil, proc)
	annotated := func(id string, pid int, profile string) Running {
		req := hook.Request{Op: hook.OpRegister, ContainerID: id, PID: pid}
		if profile != "" {
			req.Annotations = map[string]string{hook.AnnotationProfile: profile}
		}
		return Running{Request: req}
	}
	running := []Running{
		annotated("adopted", 10, "p"),
		annotated("missing", 11, "p"),
		annotated("plain", 13, ""),
		annotated("exited", 77, "p"),
	}
	got, err := r.Reconcile(context.Background(), running)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Adopted, got.Registered, got.Removed, len(got.Failed)) != "[adopted] [missing] [2999] 0" {
		t.Errorf("reconciled %+v", got)
	}
	if fmt.Sprint(fake.regs) != "map[2001:p 2002:p]" || !fake.late[2002] || fake.late[2001] {
		t.Errorf("registrations %v (late %v)", fake.regs, fake.late)
	}
	if r.ContainerOf(2001) != "adopted" || r.ContainerOf(2002) != "missing" || r.Registered() != 2 || r.Unregistered() != 0 {
		t.Errorf("registrar: 2001=%q 2002=%q registered %d unregistered %d", r.ContainerOf(2001), r.ContainerOf(2002), r.Registered(), r.Unregistered())
	}

	// A registration deleted behind the registrar's back is repaired; nothing else moves.
	delete(fake.regs, 2002)
	got, err = r.Reconcile(context.Background(), running)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Adopted, got.Registered, got.Removed) != "[] [missing] []" || fake.regs[2002] != "p" {
		t.Errorf("after deleting 2002: reconciled %+v, registrations %v", got, fake.regs)
	}

	// A sandboxed container that cannot be registered is counted.
	running = append(running, annotated("unknown-profile", 13, "nope"))
	got, err = r.Reconcile(context.Background(), running)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Failed["unknown-profile"]; err == nil || !strings.Contains(err.Error(), "profile nope is not loaded") || r.Unregistered() != 1 {
		t.Errorf("failed %v, unregistered %d", got.Failed, r.Unregistered())
	}
}

// TestReusedNamespace: a container that is gone without its poststop hook leaves its
// registration behind; the kernel then gives its namespace's inode number to a new
// container, which must be registered, not refused.
func TestReusedNamespace(t *testing.T) {
	proc := fakeProc(t, map[int]uint32{10: 2001})
	fake := &fakeRegistry{regs: map[uint32]string{}, late: map[uint32]bool{}}
	r := newTestRegistrar(t, fake, map[string]bool{"p": true}, nil, proc)
	req := func(id string, pid int) hook.Request {
		return hook.Request{Op: hook.OpRegister, ContainerID: id, PID: pid, Annotations: map[string]string{hook.AnnotationProfile: "p"}}
	}
	if _, err := r.Handle(context.Background(), req("old", 10)); err != nil {
		t.Fatal(err)
	}
	// "old" exits; pid 11 of "new" is in a namespace with the same number.
	if err := os.RemoveAll(filepath.Join(proc, "10")); err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(proc, "11", "ns")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("mnt:[2001]", filepath.Join(d, "mnt")); err != nil {
		t.Fatal(err)
	}
	resp, err := r.Handle(context.Background(), req("new", 11))
	if err != nil || resp.MountNamespace != 2001 {
		t.Fatalf("new container: %+v, %v", resp, err)
	}
	if r.ContainerOf(2001) != "new" || r.Has("old") {
		t.Errorf("namespace 2001 is %q's; old still known: %v", r.ContainerOf(2001), r.Has("old"))
	}
}

// racyRegistry runs during before its first Registered, as a hook racing with a
// reconciliation would.
type racyRegistry struct {
	*fakeRegistry
	during func()
}

func (r *racyRegistry) Registered() (map[uint32]tables.Registration, error) {
	out, err := r.fakeRegistry.Registered()
	if r.during != nil {
		r.during()
		r.during = nil
	}
	return out, err
}

// TestReconcileKeepsFreshRegistration: a namespace dead when the reconciliation read the
// kernel's registrations may be reused, number and all, by a container the hook registers
// before the reconciliation removes the dead ones. That registration must survive.
func TestReconcileKeepsFreshRegistration(t *testing.T) {
	proc := fakeProc(t, map[int]uint32{})
	fake := &racyRegistry{fakeRegistry: &fakeRegistry{regs: map[uint32]string{2005: "p"}, late: map[uint32]bool{}}}
	r := newTestRegistrar(t, fake, map[string]bool{"p": true}, nil, proc)
	fake.during = func() {
		// A new container in namespace 2005 registers; its process is not yet in the
		// procfs the reconciliation reads next (it is torn down at once here).
		d := filepath.Join(proc, "20", "ns")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("mnt:[2005]", filepath.Join(d, "mnt")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Handle(context.Background(), hook.Request{Op: hook.OpRegister, ContainerID: "new", PID: 20,
			Annotations: map[string]string{hook.AnnotationProfile: "p"}}); err != nil {
			t.Fatal(err)
		}
		os.RemoveAll(filepath.Join(proc, "20"))
	}
	got, err := r.Reconcile(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Removed) != 0 || fake.regs[2005] != "p" || r.ContainerOf(2005) != "new" {
		t.Errorf("removed %v; registrations %v; 2005 is %q's", got.Removed, fake.regs, r.ContainerOf(2005))
	}
	// The next reconciliation, with the namespace still dead, removes it.
	got, err = r.Reconcile(context.Background(), nil)
	if err != nil || fmt.Sprint(got.Removed) != "[2005]" {
		t.Errorf("second reconciliation: removed %v, %v", got.Removed, err)
	}
}

// TestReconcileUnreadableNamespaces: a container's ptrace rule refuses the enforcer, in
// its own pod, the /proc/<pid>/ns links of the container's processes (found by make
// demo: the registration was removed seconds after the hook made it, and the container
// ran unconfined). A namespace that cannot be read is not a dead one: nothing is removed
// while any process's namespace is unknown.
func TestReconcileUnreadableNamespaces(t *testing.T) {
	proc := fakeProc(t, map[int]uint32{10: 2001})
	// Process 20 is a registered container's init whose ns/mnt the enforcer may not
	// read: readlink fails, not with ENOENT.
	d := filepath.Join(proc, "20", "ns")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "mnt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fake := &fakeRegistry{regs: map[uint32]string{2001: "p", 2020: "p"}, late: map[uint32]bool{}}
	r := newTestRegistrar(t, fake, map[string]bool{"p": true}, nil, proc)
	got, err := r.Reconcile(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Unreadable != 1 || len(got.Removed) != 0 || fake.regs[2020] != "p" {
		t.Errorf("reconciled %+v, registrations %v; want 2020 kept while process 20's namespace is unknown", got, fake.regs)
	}

	// Once every namespace can be read again, a dead one goes.
	if err := os.RemoveAll(filepath.Join(proc, "20")); err != nil {
		t.Fatal(err)
	}
	got, err = r.Reconcile(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Unreadable != 0 || fmt.Sprint(got.Removed) != "[2020]" || fake.regs[2001] != "p" {
		t.Errorf("reconciled %+v, registrations %v; want 2020 removed, 2001 kept", got, fake.regs)
	}
}
