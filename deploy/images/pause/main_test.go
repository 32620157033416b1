package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReapCollectsEveryExitedChild(t *testing.T) {
	// Children started without os/exec, whose Wait would race with reap for them.
	var pids []int
	for range 3 {
		pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		// A zombie is still signalable; a reaped child is gone (ESRCH).
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("child %d was not reaped", pid)
			}
			reap()
			time.Sleep(10 * time.Millisecond)
		}
	}
	var status syscall.WaitStatus
	if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); err != syscall.ECHILD {
		t.Errorf("after reap, wait4 = %d, %v; want ECHILD (no children left)", pid, err)
	}
}

func TestWaitReapsOnSIGCHLDAndReturnsOnAnyOtherSignal(t *testing.T) {
	signals := make(chan os.Signal, 3)
	signals <- syscall.SIGCHLD
	signals <- syscall.SIGCHLD
	signals <- syscall.SIGTERM
	reaps := 0
	if s := wait(signals, func() { reaps++ }); s != syscall.SIGTERM || reaps != 2 {
		t.Errorf("wait = %v after %d reaps; want SIGTERM after 2", s, reaps)
	}
}

func TestTheBinaryExitsZeroOnSIGTERMAndSIGINT(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "pause")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			var stderr strings.Builder
			cmd := exec.Command(bin)
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// The signal handler is installed a moment after start; until then the
			// signal would kill the process, which the exit status would show.
			time.Sleep(300 * time.Millisecond)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("pause after %v: %v\n%s", sig, err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("pause did not exit on %v", sig)
			}
			if !strings.Contains(stderr.String(), "shutting down") {
				t.Errorf("stderr %q: want it to say it is shutting down", stderr.String())
			}
		})
	}
}
