//go:build vmguest

package bpf

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/podarmor/podarmor/enforcer/tables"
)

// noHostAgents is a host mount namespace no task is in: with it, the test process is
// no host agent, as the enforcer in a pod of its own is not, and only enforcer_self can
// exempt it from a sandbox's readby rules.
const noHostAgents = 1

// TestEnforcerReadsNamespaceLinks: a sandbox's runtime-default-ptrace rule refuses other
// processes its /proc/<pid>/ns links, but not the enforcer that registered it (this
// process, which loaded the object), and only for reads; the last enforcer to load is
// the exempt one.
func TestEnforcerReadsNamespaceLinks(t *testing.T) {
	e := loadWith(t, Options{HostMntns: noHostAgents})
	pinDir := e.pinDir
	prof := install(t, e, policy("self", ""))
	mkdirs(t, "/self")
	os.Remove(inRoot("/self/stop"))
	c := startContainer(t, box{profile: prof, socket: hookSocket(t, e)}, "until", "/self/stop")
	pid := fmt.Sprint(c.pid(t))
	defer func() {
		write(t, "/self/stop", "")
		allowed(t, "the sandbox", c.wait(t))
	}()

	allowed(t, "the enforcer reads the sandbox's mount namespace link", asOutcome(nsRead(pid)))
	denied(t, "another process of the node reads it", onHost(t, "ns-read", pid))
	denied(t, "another process of the node opens it", onHost(t, "ns-open", pid))
	denied(t, "the enforcer opens the sandbox's /proc/<pid>/mem (attach mode)", asOutcome(procMem(pid)))

	// A process given the enforcer's pid later starts at another time.
	own, err := ownTask()
	if err != nil {
		t.Fatal(err)
	}
	if own.TGID != uint32(os.Getpid()) || own.StartTicks == 0 {
		t.Fatalf("ownTask() = %+v, want pid %d and a start time", own, os.Getpid())
	}
	if err := e.put("enforcer_self", uint32(0), tables.EnforcerTask{TGID: own.TGID, StartTicks: own.StartTicks + 1}); err != nil {
		t.Fatal(err)
	}
	denied(t, "the enforcer's pid with another start time", asOutcome(nsRead(pid)))
	if err := e.put("enforcer_self", uint32(0), own); err != nil {
		t.Fatal(err)
	}
	allowed(t, "the enforcer again", asOutcome(nsRead(pid)))

	// A second enforcer loads the pinned state and takes the exemption over: it reads,
	// the first one no longer does.
	allowed(t, "a second enforcer reads the link once it has loaded", onHost(t, "load-then-ns-read", pinDir, pid))
	denied(t, "the first enforcer after the second loaded", asOutcome(nsRead(pid)))
	denied(t, "another process after the second enforcer exited", onHost(t, "ns-read", pid))

	// The first one restarts (loads again) and is the enforcer once more.
	again, err := Load(Options{PinDir: pinDir, HostMntns: noHostAgents})
	if err != nil {
		t.Fatalf("load again: %v", err)
	}
	defer again.Close()
	allowed(t, "the enforcer after loading again", asOutcome(nsRead(pid)))
	denied(t, "another process still", onHost(t, "ns-read", pid))
}

// asOutcome reports err as the helper does.
func asOutcome(err error) outcome {
	switch {
	case err == nil:
		return outcome{"ok", 0}
	case errors.Is(err, syscall.EPERM):
		return outcome{"EPERM: " + err.Error(), 1}
	}
	return outcome{"error: " + err.Error(), 2}
}

// procRefusal turns procfs's EACCES for a refused ptrace check into EPERM, as
// ptrace-read does: procfs reports every refusal so, whatever the LSM returned.
func procRefusal(err error) error {
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w (EACCES from procfs)", syscall.EPERM)
	}
	return err
}

// nsRead reads the link /proc/<pid>/ns/mnt.
func nsRead(pid string) error {
	_, err := os.Readlink("/proc/" + pid + "/ns/mnt")
	return procRefusal(err)
}

// nsOpen opens /proc/<pid>/ns/mnt.
func nsOpen(pid string) error {
	f, err := os.Open("/proc/" + pid + "/ns/mnt")
	if err != nil {
		return procRefusal(err)
	}
	return f.Close()
}

// procMem opens /proc/<pid>/mem for reading, which takes a ptrace attach check.
func procMem(pid string) error {
	f, err := os.Open("/proc/" + pid + "/mem")
	if err != nil {
		return procRefusal(err)
	}
	return f.Close()
}

// loadThenNSRead is a second enforcer: it loads the object pinned at pinDir (adopting
// the first one's state) and reads pid's mount namespace link.
func loadThenNSRead(pinDir, pid string) error {
	e, err := Load(Options{PinDir: pinDir, HostMntns: noHostAgents})
	if err != nil {
		return fmt.Errorf("load (not the operation tried): %w", err)
	}
	defer e.Close()
	return nsRead(pid)
}
