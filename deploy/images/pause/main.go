// Command pause is the first process of every pod on the local cluster's node (containerd's
// sandbox_image, localhost/podarmor/pause:3.10): it holds the pod's namespaces open by
// doing nothing until the kubelet stops the pod with SIGTERM (or SIGINT), and reaps the
// zombies of a pod whose containers share its PID namespace, where it is PID 1 and every
// orphan becomes its child. It exits 0 on either signal.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is the Kubernetes pause image version this one stands in for.
const version = "3.10"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("pause (podarmor)", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphans are not reaped here")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	s := wait(signals, reap)
	fmt.Fprintf(os.Stderr, "pause: shutting down on %v\n", s)
}

// wait reaps on every SIGCHLD and returns the first other signal.
func wait(signals <-chan os.Signal, reap func()) os.Signal {
	for s := range signals {
		if s != syscall.SIGCHLD {
			return s
		}
		reap()
	}
	return nil
}

// reap collects every child that has exited, without blocking: signals coalesce, so one
// SIGCHLD may stand for several children.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
