//go:build vmguest

package bpf

// The containers of the guest tests: real runc containers with a busybox root file
// system (enforcer/trial's), created by runc with the podarmor OCI hook at createRuntime
// and poststop. The hook is this test binary in hook mode, which runs hook.RunOCI as
// `podarmor-enforcer oci-hook` does; it asks a hook server (hook.Listen) to register the
// container, and runc goes on only once the server has answered. The server's handler
// maps the container's podarmor.io/profile annotation to a profile of the enforcer under
// test and registers it, as the standalone enforcer's registrar does (that package
// imports this one, so its tests cannot run it here). The container's process is this
// test binary again, bind-mounted read-only at helperPath: the helper doing one
// operation, or the worker of a sandbox (see sandbox), which runs many.
//
// Every container shares the root file system: runc mounts /proc, /dev and the rest in
// each container's own mount namespace, so they do not meet. The files the tests make
// go both to the VM and to the containers' root (write, mkdirs, ...), so that an
// operation means the same in a container, in the unconfined container and on the VM.
//
// The containers are privileged and share the VM's PID, network, IPC and cgroup
// namespaces (a privileged pod with hostPID, hostNetwork and hostIPC), unless podLike:
// the tests try mounts, bpf(), module loading and capabilities that an unprivileged
// container would be refused for lack of a capability before any LSM decides, they
// compare containers with processes, listeners and shared memory of the VM, and a cgroup
// v1 mount (CVE-2022-0492) must fail otherwise than with EPERM when unconfined, which the
// kernel refuses in a new cgroup namespace. Their own mount and UTS namespaces and root
// file system make them containers to the enforcer. podLike containers are what
// containerd makes for a pod without a securityContext.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/trial"
)

const (
	// ctrDir holds the containers' root file system, kubelet's files and bundles.
	ctrDir   = "/run/podarmor-test"
	rootfs   = ctrDir + "/rootfs"
	podFiles = ctrDir + "/pod"
	// helperPath is where the test binary is in every container.
	helperPath = "/.podarmor/test"
	// ociHookEnv marks a process as the OCI hook.
	ociHookEnv = "PODARMOR_OCI_HOOK"
)

var (
	rootfsOnce sync.Once
	rootfsErr  error
	runcPath   string
	ctrSeq     atomic.Int32
)

// containerRoot makes the containers' root file system and kubelet's files, once.
func containerRoot(t *testing.T) {
	t.Helper()
	rootfsOnce.Do(func() {
		// before a test puts a busybox named runc in the VM's PATH
		if runcPath, rootfsErr = exec.LookPath("runc"); rootfsErr != nil {
			return
		}
		for _, d := range []string{rootfs, podFiles, filepath.Join(ctrDir, "bundles")} {
			if rootfsErr = os.MkdirAll(d, 0o755); rootfsErr != nil {
				return
			}
		}
		if rootfsErr = trial.WriteRootfs(rootfs, "/bin/busybox"); rootfsErr != nil {
			return
		}
		rootfsErr = trial.WritePodFiles(podFiles, "sandbox")
	})
	if rootfsErr != nil {
		t.Fatalf("the containers' root file system: %v", rootfsErr)
	}
}

// inRoot is path p in the containers' root file system, as the VM sees it.
func inRoot(p string) string { return filepath.Join(rootfs, p) }

// hookServers are the hook servers of the enforcers under test, by enforcer.
var (
	hookServersMu sync.Mutex
	hookServers   = map[*Enforcer]string{}
)

// serveHook starts a hook server that registers containers with e and returns its
// socket. It stops with the test unless forGood (the shared enforcer's).
func serveHook(t *testing.T, e *Enforcer, forGood bool) string {
	t.Helper()
	socket := fmt.Sprintf("%s/hook-%d.sock", ctrDir, ctrSeq.Add(1))
	srv, err := hook.Listen(hook.ServerConfig{Socket: socket, Handler: &testRegistrar{e: e, byID: map[string]uint32{}},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("hook server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background()) }()
	hookServersMu.Lock()
	hookServers[e] = socket
	hookServersMu.Unlock()
	if !forGood {
		t.Cleanup(func() {
			srv.Close()
			if err := <-done; err != nil {
				t.Errorf("hook server: %v", err)
			}
			hookServersMu.Lock()
			delete(hookServers, e)
			hookServersMu.Unlock()
		})
	}
	return socket
}

// hookSocket is the socket of e's hook server.
func hookSocket(t *testing.T, e *Enforcer) string {
	t.Helper()
	hookServersMu.Lock()
	defer hookServersMu.Unlock()
	s, ok := hookServers[e]
	if !ok {
		t.Fatal("the enforcer under test has no hook server (serveHook)")
	}
	return s
}

// testRegistrar is the hook server's handler: the container's profile is its
// podarmor.io/profile annotation, registered with the enforcer under test from the
// container's first exec on.
type testRegistrar struct {
	e    *Enforcer
	mu   sync.Mutex
	byID map[string]uint32
}

func (r *testRegistrar) Handle(_ context.Context, req hook.Request) (hook.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Op == hook.OpUnregister {
		ns, ok := r.byID[req.ContainerID]
		if !ok {
			return hook.Response{}, nil
		}
		delete(r.byID, req.ContainerID)
		return hook.Response{MountNamespace: ns}, r.e.Unregister(ns)
	}
	profile := req.Annotations[hook.AnnotationProfile]
	if profile == "" {
		return hook.Response{}, nil
	}
	ns, err := hook.MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", req.PID))
	if err != nil {
		return hook.Response{}, err
	}
	if err := r.e.Register(ns, profile, false); err != nil {
		return hook.Response{}, err
	}
	r.byID[req.ContainerID] = ns
	return hook.Response{Profile: profile, MountNamespace: ns}, nil
}

// box is how a container is made.
type box struct {
	// profile is the container's podarmor.io/profile annotation; "" for an unconfined
	// container.
	profile string
	// socket is the hook's enforcer socket.
	socket string
	// onUnavailable and unprotected are the hook's settings; refuse and
	// hook.DefaultUnprotectedDir when empty.
	onUnavailable hook.OnUnavailable
	unprotected   string
	// mounts are bind mounts of VM paths, after the test binary's.
	mounts []trial.Mount
	// podLike makes the container what containerd makes for a pod without a
	// securityContext, instead of a privileged one in the VM's PID, network and IPC
	// namespaces.
	podLike bool
	// args replace the helper as the container's process.
	args []string
	// appArmor and seccomp are the container's AppArmor profile (loaded) and seccomp
	// filter, as the runtime applies a policy's; none when empty.
	appArmor string
	seccomp  *specs.LinuxSeccomp
}

// container is a runc container that runs (runc run) until its process exits.
type container struct {
	id      string
	cmd     *exec.Cmd
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	pidFile string
	helper  bool // the process is the helper
	done    chan struct{}
	err     error
}

// startContainer creates and starts a container whose process is the helper doing op.
func startContainer(t *testing.T, b box, op ...string) *container {
	t.Helper()
	return startRunc(t, b, nil, op)
}

// startRunc starts runc run for a container, with setup's changes to its command.
func startRunc(t *testing.T, b box, setup func(*exec.Cmd), op []string) *container {
	t.Helper()
	containerRoot(t)
	id := fmt.Sprintf("c%d", ctrSeq.Add(1))
	bundle := filepath.Join(ctrDir, "bundles", id)
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := containerSpec(t, id, b, op)
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &container{id: id, pidFile: filepath.Join(bundle, "pid"), helper: b.args == nil, done: make(chan struct{})}
	// runc run passes its stdio to the container's process; the helper writes its
	// outcome to stdout and nothing to stderr, where runc writes its own errors.
	c.cmd = exec.Command(runcPath, "run", "--no-pivot", "--bundle", bundle, "--pid-file", c.pidFile, id)
	c.cmd.Stdout, c.cmd.Stderr = &c.stdout, &c.stderr
	if setup != nil {
		setup(c.cmd)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("runc run: %v", err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c
}

// containerSpec is the runtime spec of a container: trial's pod-like one, with the hook,
// the test binary and the namespaces the box asks for.
func containerSpec(t *testing.T, id string, b box, op []string) *specs.Spec {
	t.Helper()
	on := b.onUnavailable
	if on == "" {
		on = hook.Refuse
	}
	unprotected := b.unprotected
	if unprotected == "" {
		unprotected = hook.DefaultUnprotectedDir
	}
	timeout := 30
	args := b.args
	if args == nil {
		args = append([]string{helperPath}, op...)
	}
	sc := trial.SpecConfig{
		Hostname:        id,
		Rootfs:          rootfs,
		Files:           podFiles,
		Args:            args,
		Privileged:      !b.podLike,
		Mounts:          append([]trial.Mount{{Source: self(t), Destination: helperPath, ReadOnly: true}}, b.mounts...),
		CgroupsPath:     "/podarmor-test/" + id,
		Annotations:     map[string]string{},
		AppArmorProfile: b.appArmor,
		Seccomp:         b.seccomp,
	}
	if b.socket != "" {
		sc.Hook = &specs.Hook{
			Path:    self(t),
			Args:    []string{"podarmor-enforcer", "oci-hook", b.socket, string(on), unprotected},
			Env:     []string{ociHookEnv + "=1"},
			Timeout: &timeout,
		}
	}
	if b.profile != "" {
		sc.Annotations[hook.AnnotationProfile] = b.profile
	}
	s := trial.Spec(sc)
	s.Process.Env = append(s.Process.Env, "PODARMOR_HELPER=1")
	if !b.podLike {
		s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
			switch ns.Type {
			case specs.PIDNamespace, specs.NetworkNamespace, specs.IPCNamespace, specs.CgroupNamespace:
				return true
			}
			return false
		})
	}
	return s
}

// wait waits for the container's process and returns its outcome. A container that
// did not run (runc failed before its process wrote its outcome) fails the test.
func (c *container) wait(t *testing.T) outcome {
	t.Helper()
	o, err := c.result()
	if err != nil {
		t.Fatalf("container %s: %v", c.id, err)
	}
	return o
}

// result waits for runc and returns the outcome: the helper's, or stdout and stderr of
// another process. It is an error when runc failed before the helper ran.
func (c *container) result() (outcome, error) {
	<-c.done
	code := 0
	if ee, ok := c.err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if c.err != nil {
		return outcome{}, c.err
	}
	if !c.helper {
		return outcome{c.stdout.String() + c.stderr.String(), code}, nil
	}
	// The helper reports every failure on stdout (a program it execs may end quietly
	// with 0): a failure with nothing there is runc's.
	if code != 0 && c.stdout.Len() == 0 {
		return outcome{}, fmt.Errorf("runc run exited %d and the helper reported nothing: %s", code, strings.TrimSpace(c.stderr.String()))
	}
	return outcome{c.stdout.String(), code}, nil
}

// pid waits until the container's process runs the helper and returns its pid (in the
// VM's PID namespace).
func (c *container) pid(t *testing.T) int {
	t.Helper()
	// A start takes 4-7 s under emulation, and over 30 s in a VM niced on a busy
	// machine (make test on 2 cores).
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			t.Fatalf("container %s ended before it was seen running: %v: %s%s", c.id, c.err, c.stdout.String(), c.stderr.String())
		default:
		}
		if b, err := os.ReadFile(c.pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				// runc start has happened once the process is the helper, not runc init
				if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.HasPrefix(cmdline, []byte(helperPath+"\x00")) {
					return pid
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("container %s: its process did not start within 3 minutes", c.id)
	return 0
}

// runContainer runs a container to its end.
func runContainer(t *testing.T, b box, op ...string) outcome {
	t.Helper()
	return startContainer(t, b, op...).wait(t)
}

// ociHook is the hook mode of the test binary: `podarmor-enforcer oci-hook` with the
// socket, the OnUnavailable setting and the unprotected directory as arguments.
func ociHook(args []string) int {
	if len(args) != 4 || args[0] != "oci-hook" {
		fmt.Fprintf(os.Stderr, "oci hook: arguments %q, want oci-hook SOCKET ON-UNAVAILABLE UNPROTECTED-DIR\n", args)
		return 2
	}
	on, err := hook.ParseOnUnavailable(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	err = hook.RunOCI(context.Background(), hook.OCIConfig{
		Client:         hook.Client{Socket: args[1]},
		OnUnavailable:  on,
		UnprotectedDir: args[3],
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}, os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// A sandbox is a container whose process is the helper's worker: it runs each
// operation it is sent in a new process of the container and answers with the outcome.
// Starting a runc container under emulation takes seconds (runc, runc init and two hooks
// are Go programs); a sandbox starts once for all the operations a test tries with one
// box.
type sandbox struct {
	key string
	c   *container
	in  io.WriteCloser
	out *bufio.Reader
}

// workerResult is the worker's answer. Requests and answers carry bytes (base64 in
// JSON): the pattern table's paths are not all UTF-8.
type workerResult struct {
	Out  []byte `json:"out"`
	Code int    `json:"code"`
}

var (
	sandboxesMu sync.Mutex
	sandboxes   = map[string]*sandbox{}
	// sandboxesOf is the top-level test the sandboxes are of: they end when the next
	// top-level test starts using sandboxes (or calls closeSandboxes).
	sandboxesOf string
)

// inBox runs helper operation op in the sandbox of box b, starting it if needed.
func inBox(t *testing.T, b box, op ...string) outcome {
	t.Helper()
	top, _, _ := strings.Cut(t.Name(), "/")
	sandboxesMu.Lock()
	if top != sandboxesOf {
		closeSandboxesLocked()
		sandboxesOf = top
	}
	key := fmt.Sprintf("%s|%s|%v|%v|%s|%v", b.socket, b.profile, b.mounts, b.podLike, b.appArmor, b.seccomp != nil)
	s, ok := sandboxes[key]
	if !ok {
		s = startSandbox(t, b)
		s.key = key
		sandboxes[key] = s
	}
	sandboxesMu.Unlock()
	return s.do(t, op)
}

func startSandbox(t *testing.T, b box) *sandbox {
	t.Helper()
	s := &sandbox{}
	var stdout io.ReadCloser
	s.c = startRunc(t, b, func(cmd *exec.Cmd) {
		var err error
		cmd.Stdout = nil
		if s.in, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if stdout, err = cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
	}, []string{"worker"})
	s.out = bufio.NewReader(stdout)
	return s
}

// do sends op to the worker and returns its outcome.
func (s *sandbox) do(t *testing.T, op []string) outcome {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		s.in.Close()
		sandboxesMu.Lock()
		if sandboxes[s.key] == s {
			delete(sandboxes, s.key)
		}
		sandboxesMu.Unlock()
		<-s.c.done
		t.Fatalf("sandbox %s: "+format+": %s", append([]any{s.c.id}, append(args, s.c.stderr.String())...)...)
	}
	args := make([][]byte, len(op))
	for i, a := range op {
		args[i] = []byte(a)
	}
	req, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.in.Write(append(req, '\n')); err != nil {
		fail("send %q: %v", op, err)
	}
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		fail("outcome of %q: %v", op, err)
	}
	var r workerResult
	if err := json.Unmarshal(line, &r); err != nil {
		fail("outcome of %q: %v: %q", op, err, line)
	}
	return outcome{string(r.Out), r.Code}
}

// closeSandboxes ends every sandbox: each worker's input closes, it exits, and runc
// runs the poststop hook.
func closeSandboxes() {
	sandboxesMu.Lock()
	defer sandboxesMu.Unlock()
	closeSandboxesLocked()
}

func closeSandboxesLocked() {
	for key, s := range sandboxes {
		s.in.Close()
		<-s.c.done
		delete(sandboxes, key)
	}
}

// worker is the container process of a sandbox: it reads operations, one JSON array of
// arguments a line, runs each as the helper in a new process and writes the outcome as
// one line of JSON.
func worker() int {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var args [][]byte
		if err := json.Unmarshal(in.Bytes(), &args); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 2
		}
		op := make([]string, len(args))
		for i, a := range args {
			op[i] = string(a)
		}
		if len(op) > 0 && op[0] == "chroot-check" {
			if err := enc.Encode(chrootCheckInThread(op)); err != nil {
				return 2
			}
			continue
		}
		cmd := exec.Command(helperPath, op...)
		// An empty pipe for stdin: exec's default, /dev/null, is a file the worker
		// would open, under the profile (the pattern "/**" refuses it).
		stdin, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 2
		}
		w.Close()
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		stdin.Close()
		r := workerResult{Out: out}
		if ee, ok := err.(*exec.ExitError); ok {
			r.Code = ee.ExitCode()
		} else if err != nil {
			r.Out, r.Code = fmt.Appendf(nil, "worker: run the helper: %v", err), 3
		}
		if err := enc.Encode(r); err != nil {
			return 2
		}
	}
	return 0
}

// chrootCheckInThread runs chroot-check in the worker itself, on a thread with a root of
// its own, and reports as the helper does. The pattern table's profiles refuse reading
// "/**", and an exec in a running container opens its binary for reading: a new process
// could not start (in a new container the binary of the first exec is opened before that
// exec arms the registration).
func chrootCheckInThread(op []string) workerResult {
	done := make(chan workerResult)
	go func() {
		// Never unlocked: the thread, with its own root, ends with the goroutine.
		runtime.LockOSThread()
		var out bytes.Buffer
		err := unix.Unshare(unix.CLONE_FS)
		if err == nil {
			err = chrootCheck(&out, op[1], op[2:])
		}
		r := workerResult{}
		switch {
		case err == nil:
			fmt.Fprintln(&out, "ok")
		case errors.Is(err, syscall.EPERM):
			fmt.Fprintln(&out, "EPERM:", err)
			r.Code = 1
		default:
			fmt.Fprintln(&out, "error:", err)
			r.Code = 2
		}
		r.Out = out.Bytes()
		done <- r
	}()
	return <-done
}
