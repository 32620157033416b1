package standalone

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
			wantErr: "profile ap.default.other is not loaded on this node (loaded: ap.default.aa, ap.default.bpf, broken)",
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
			r, err := newRegistrar(slog.New(slog.DiscardHandler), fake, profiles, map[string]string{"mapped": "ap.default.bpf"}, proc)
			if err != nil {
				t.Fatal(err)
			}
			var resp hook.Response
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
				if r.containerOf(ns) == "" || fake.late[ns] {
					t.Errorf("namespace %d: container %q, late %v", ns, r.containerOf(ns), fake.late[ns])
				}
			}
		})
	}
}

func TestAdoptUnprotected(t *testing.T) {
	proc := fakeProc(t, map[int]uint32{10: 2001, 11: 2002})
	fake := &fakeRegistry{regs: map[uint32]string{}, late: map[uint32]bool{}}
	r, err := newRegistrar(slog.New(slog.DiscardHandler), fake, map[string]bool{"p": true}, nil, proc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for id, rec := range map[string]struct{ pid, ns int }{"alive": {10, 2001}, "gone": {77, 0}, "pid reused": {11, 2009}} {
		data := fmt.Sprintf(`{"version":1,"op":"register","containerID":%q,"pid":%d,"annotations":{"podarmor.io/profile":"p"},"time":"2026-01-01T00:00:00Z","mountNamespace":%d}`, id, rec.pid, rec.ns)
		if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r.adoptUnprotected(dir)
	if fake.regs[2001] != "p" || !fake.late[2001] || len(fake.regs) != 1 {
		t.Errorf("registrations %v (late %v), want namespace 2001 late with p", fake.regs, fake.late)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("records left: %v", left)
	}
}
