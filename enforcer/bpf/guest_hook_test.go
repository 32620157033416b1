//go:build vmguest

package bpf

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// TestHookBeforeFirstInstruction: pod-like runc containers whose OCI hook (hook.RunOCI)
// asks the enforcer's hook server (hook.Listen) to register them before runc starts
// their process. A container whose very first action is a denied open (its process is
// busybox cat of the file) is denied, 100 containers in a row (a container costs 2.5-7 s
// under emulation, so this runs on 6.12 only: see sixOneSkips). Then, with the server
// stopped and its socket gone, the hook set to refuse makes runc fail the container
// before its process runs, and the hook set to allow lets it run unconfined and records
// it in the unprotected directory.
func TestHookBeforeFirstInstruction(t *testing.T) {
	e := enforcer(t)
	write(t, "/first/f", "the first secret")
	prof := install(t, e, policy("first", `  customRules:
    files:
    - name: first
      paths: ["/first/f"]
      permissions: [read]
`))
	socket := filepath.Join(ctrDir, "first.sock")
	unprotected := filepath.Join(ctrDir, "unprotected")
	srv, err := hook.Listen(hook.ServerConfig{Socket: socket, Handler: &testRegistrar{e: e, byID: map[string]uint32{}},
		Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	defer srv.Close()

	closeSandboxes()
	before, err := e.Counters()
	must(t, err)
	decision := Decision{Profile: prof, Rule: "custom/first", Hook: tables.HookFileOpen, Action: tables.ActionEnforce}
	cat := box{profile: prof, socket: socket, podLike: true, args: []string{"/bin/busybox", "cat", "/first/f"}}
	const n = 100
	start := time.Now()
	for i := range n {
		o := runContainer(t, cat)
		if o.code != 1 || !strings.Contains(o.out, "Operation not permitted") || strings.Contains(o.out, "secret") {
			t.Fatalf("container %d of %d: want its first open refused with EPERM, got %v", i+1, n, o)
		}
		if (i+1)%20 == 0 {
			t.Logf("%d containers refused, %s", i+1, time.Since(start).Round(100*time.Millisecond))
		}
	}
	took := time.Since(start)
	t.Logf("%d containers, each registered by its hook and refused its first open: %s (%s a container: runc run, two hooks, busybox cat)",
		n, took.Round(100*time.Millisecond), (took / n).Round(time.Millisecond))
	after, err := e.Counters()
	must(t, err)
	if got := after[decision] - before[decision]; got != n {
		t.Errorf("refusals counted under custom/first: %d, want %d", got, n)
	}
	if regs, err := e.Registered(); err != nil || len(regs) != 0 {
		t.Errorf("registrations left after the containers' poststop hooks: %v (%v)", regs, err)
	}

	srv.Close()
	must(t, <-done)
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Fatalf("the stopped server's socket is still there: %v", err)
	}
	t.Run("without the enforcer the hook set to refuse fails the container", func(t *testing.T) {
		o := runContainer(t, cat)
		if o.code == 0 || strings.Contains(o.out, "Operation not permitted") || strings.Contains(o.out, "secret") {
			t.Fatalf("want runc to fail before the container's process ran, got %v", o)
		}
		if !strings.Contains(o.out, "enforcer at "+socket+" is unavailable") {
			t.Errorf("runc's error does not say the enforcer is unavailable: %v", o)
		}
		if recs, _, _ := hook.ReadUnprotected(unprotected); len(recs) != 0 {
			t.Errorf("refused container recorded as unprotected: %+v", recs)
		}
	})
	t.Run("without the enforcer the hook set to allow lets the container run and records it", func(t *testing.T) {
		allow := cat
		allow.onUnavailable, allow.unprotected = hook.Allow, unprotected
		c := startContainer(t, allow)
		o := c.wait(t)
		if o.code != 0 || !strings.Contains(o.out, "the first secret") {
			t.Errorf("the unregistered container: want its read to succeed, got %v", o)
		}
		recs, files, err := hook.ReadUnprotected(unprotected)
		must(t, err)
		if len(recs) != 1 || recs[0].ContainerID != c.id || recs[0].Annotations[hook.AnnotationProfile] != prof || recs[0].MountNamespace == 0 {
			t.Fatalf("unprotected records %+v, want container %s with its profile and mount namespace", recs, c.id)
		}
		t.Logf("recorded in %s", files[0])
		for _, f := range files {
			os.Remove(f)
		}
	})
}
