// Package trial is the guest side of `podarmor try`: inside the VM, it starts the
// standalone enforcer with the policy, makes a container that looks like a pod's
// (busybox userland, service-account token, kubelet's files, the default capabilities
// and masked paths, its own network namespace) with the podarmor OCI hook and the
// policy's AppArmor profile and seccomp filter, runs the command in it with runc, and
// reports the command's exit code and the enforcer's events. `podarmor-enforcer
// try-guest` runs it; the host side is policies/cli.
//
// The container is created and started in two steps (runc create, runc start), as
// containerd does, so that a container the hook refuses is told apart from a command
// that fails: runc create fails and nothing of the command ran. The runner is the
// container's subreaper, which gives it the command's exact exit status.
package trial

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/policyset"
	"github.com/podarmor/podarmor/enforcer/seccomp"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
)

// ExitNotStarted is the runner's exit code when the container did not start (or the
// runner failed before it could start it), as `docker run` uses 125.
const ExitNotStarted = 125

// DefaultDir is where the runner keeps its files in the VM.
const DefaultDir = "/run/podarmor/try"

// containerID is the container's ID and its pod's name.
const containerID = "try"

// Config configures Run.
type Config struct {
	// PolicyFile holds the policy (one ArmorPolicy or ClusterArmorPolicy). Required
	// unless Unconfined.
	PolicyFile string
	// Compile are the compiler's options.
	Compile compile.Options
	// Unconfined runs the same container without the policy: no enforcer, hook,
	// AppArmor profile or seccomp filter.
	Unconfined bool
	// Privileged makes the container privileged: every capability and device, no
	// masked or read-only paths.
	Privileged bool
	// Mounts are bind mounts of VM paths into the container.
	Mounts []Mount
	// Setup are shell commands run in the VM, outside the container, once the enforcer
	// is ready and before the container starts.
	Setup []string
	// Command is what the container runs. Required.
	Command []string

	// WithoutEnforcer leaves the enforcer stopped while the container starts, to show
	// what the hook does then (OnUnavailable). The container gets the hook only: the
	// AppArmor profile and seccomp filter are the enforcer's to deliver.
	WithoutEnforcer bool
	// OnUnavailable is the hook's setting; hook.Refuse when empty.
	OnUnavailable hook.OnUnavailable

	// Enforcer is the podarmor-enforcer binary; this process's executable when empty.
	Enforcer string
	// Busybox is the static busybox the root file system is made of; /bin/busybox when
	// empty.
	Busybox string
	// Runc is the runc binary; found in PATH when empty.
	Runc string
	// Dir holds the runner's files; DefaultDir when empty.
	Dir string

	// Output receives the command's output, stdout and stderr merged. Required.
	Output io.Writer
	// Report receives the runner's report. Required.
	Report *Reporter
	// Verbose reports the enforcer's log as it goes.
	Verbose bool
}

func (c *Config) defaults() error {
	if len(c.Command) == 0 {
		return errors.New("no command")
	}
	if c.PolicyFile == "" && !c.Unconfined {
		return errors.New("no policy file (or --unconfined)")
	}
	if c.Output == nil || c.Report == nil {
		return errors.New("no output or report writer")
	}
	if c.Enforcer == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Enforcer = exe
	}
	if c.Busybox == "" {
		c.Busybox = "/bin/busybox"
	}
	if c.Runc == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			return fmt.Errorf("runc: %w", err)
		}
		c.Runc = p
	}
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.OnUnavailable == "" {
		c.OnUnavailable = hook.Refuse
	}
	for _, m := range c.Mounts {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Destination) {
			return fmt.Errorf("mount %s:%s: both paths must be absolute", m.Source, m.Destination)
		}
	}
	return nil
}

// paths of the runner's files under Config.Dir.
type paths struct {
	dir, socket, events, enforcerLog, seccompRoot, apparmorDir, unprotected, bundle, rootfs, files, pidFile string
}

func newPaths(dir string) paths {
	return paths{
		dir:         dir,
		socket:      filepath.Join(dir, "enforcer.sock"),
		events:      filepath.Join(dir, "events.jsonl"),
		enforcerLog: filepath.Join(dir, "enforcer.log"),
		seccompRoot: filepath.Join(dir, "seccomp"),
		apparmorDir: filepath.Join(dir, "apparmor"),
		unprotected: filepath.Join(dir, "unprotected"),
		bundle:      filepath.Join(dir, "bundle"),
		rootfs:      filepath.Join(dir, "bundle", "rootfs"),
		files:       filepath.Join(dir, "pod"),
		pidFile:     filepath.Join(dir, "container.pid"),
	}
}

// Run runs the trial and returns the command's exit code, or ExitNotStarted with an
// error saying why when the command did not run.
func Run(ctx context.Context, cfg Config) (int, error) {
	if err := cfg.defaults(); err != nil {
		return ExitNotStarted, err
	}
	rep := cfg.Report
	p := newPaths(cfg.Dir)
	for _, d := range []string{p.dir, p.files, p.rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return ExitNotStarted, err
		}
	}

	var policy *policyset.Compiled
	if !cfg.Unconfined {
		set, err := policyset.Read([]string{cfg.PolicyFile}, cfg.Compile)
		if err != nil {
			return ExitNotStarted, err
		}
		if len(set) != 1 {
			return ExitNotStarted, fmt.Errorf("%s holds %d policies; try takes one", cfg.PolicyFile, len(set))
		}
		policy = &set[0]
	}

	var enf *enforcerProcess
	if policy != nil && !cfg.WithoutEnforcer {
		var err error
		enf, err = startEnforcer(ctx, cfg, p)
		if err != nil {
			return ExitNotStarted, err
		}
		defer enf.stop()
	}

	for _, s := range cfg.Setup {
		cmd := exec.CommandContext(ctx, "/bin/sh", "-c", s)
		cmd.Stdout, cmd.Stderr = cfg.Output, cfg.Output
		if err := cmd.Run(); err != nil {
			return ExitNotStarted, fmt.Errorf("setup command %q: %w", s, err)
		}
	}

	start := time.Now()
	spec, err := buildSpec(cfg, p, policy)
	if err != nil {
		return ExitNotStarted, err
	}
	if err := writeSpec(filepath.Join(p.bundle, "config.json"), spec); err != nil {
		return ExitNotStarted, err
	}
	if cfg.Verbose {
		rep.Infof("bundle made in %s", time.Since(start).Round(10*time.Millisecond))
	}
	code, runErr := runContainer(ctx, cfg, p)

	if enf != nil {
		// The enforcer drains its event readers as it stops; its events file is
		// complete once it has exited.
		if err := enf.stop(); err != nil {
			rep.Infof("the enforcer: %v", err)
		}
		reportEvents(rep, p.events)
	}
	if cfg.WithoutEnforcer {
		if recs, _, _ := hook.ReadUnprotected(p.unprotected); len(recs) > 0 {
			rep.Infof("the hook let container %s run without its BPF registration (recorded in %s)", recs[0].ContainerID, p.unprotected)
		}
	}
	if runErr != nil {
		return ExitNotStarted, runErr
	}
	return code, nil
}

// buildSpec makes the container's configuration.
func buildSpec(cfg Config, p paths, policy *policyset.Compiled) (*specs.Spec, error) {
	if err := WriteRootfs(p.rootfs, cfg.Busybox); err != nil {
		return nil, err
	}
	if err := WritePodFiles(p.files, containerID); err != nil {
		return nil, err
	}
	sc := SpecConfig{
		Hostname:    containerID,
		Rootfs:      "rootfs",
		Files:       p.files,
		Args:        cfg.Command,
		Privileged:  cfg.Privileged,
		Mounts:      cfg.Mounts,
		CgroupsPath: "/kubepods/besteffort/pod" + containerID + "/" + containerID,
		Annotations: map[string]string{
			"io.kubernetes.cri.container-type":        "container",
			"io.kubernetes.cri.container-name":        containerID,
			"io.kubernetes.cri.sandbox-name":          containerID,
			"io.kubernetes.cri.sandbox-namespace":     podNamespace,
			"io.kubernetes.cri.image-name":            "busybox",
			"io.kubernetes.cri.sandbox-uid":           "00000000-0000-0000-0000-00000000beef",
			"io.kubernetes.cri.sandbox-log-directory": "/var/log/pods/default_try",
		},
	}
	if cfg.Privileged {
		devs, err := hostDevices("/dev")
		if err != nil {
			return nil, err
		}
		sc.Devices = devs
	}
	if policy != nil {
		id := policy.ProfileID()
		sc.Annotations[hook.AnnotationProfile] = id
		timeout := 30
		sc.Hook = &specs.Hook{
			Path: cfg.Enforcer,
			Args: []string{"podarmor-enforcer", "oci-hook", "--socket", p.socket,
				"--on-unavailable", string(cfg.OnUnavailable), "--unprotected-dir", p.unprotected},
			Env:     []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
			Timeout: &timeout,
		}
		if !cfg.WithoutEnforcer {
			if policy.Profile(v1alpha1.EnforcerAppArmor) != nil {
				sc.AppArmorProfile = apparmor.ProfileName(id)
			}
			if policy.Profile(v1alpha1.EnforcerSeccomp) != nil {
				// As the runtime does with a Localhost profile: read the file the
				// enforcer wrote.
				s, err := seccomp.Store{Root: p.seccompRoot}.Read(id)
				if err != nil {
					return nil, err
				}
				sc.Seccomp = s
			}
		}
	}
	return Spec(sc), nil
}

// runContainer creates and starts the container and waits for its command.
func runContainer(ctx context.Context, cfg Config, p paths) (int, error) {
	// The container's init is runc create's child; when runc create exits it is
	// reparented to us, so that we can wait for it.
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return ExitNotStarted, fmt.Errorf("become a subreaper: %w", errno)
	}
	os.Remove(p.pidFile)
	// runc passes its own stdout and stderr to the container (no terminal): one pipe
	// for both keeps their order.
	r, w, err := os.Pipe()
	if err != nil {
		return ExitNotStarted, err
	}
	out := &startGate{w: cfg.Output}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		io.Copy(out, r)
		r.Close()
	}()

	create := exec.CommandContext(ctx, cfg.Runc, "create", "--no-pivot", "--bundle", p.bundle, "--pid-file", p.pidFile, containerID)
	create.Stdout, create.Stderr = w, w
	created := time.Now()
	err = create.Run()
	w.Close()
	if err != nil {
		<-copied
		runc(ctx, cfg, "delete", "--force", containerID)
		return ExitNotStarted, fmt.Errorf("the container did not start: runc create: %v: %s", err, strings.TrimSpace(out.held.String()))
	}
	out.open()
	if cfg.Verbose {
		cfg.Report.Infof("runc create took %s", time.Since(created).Round(10*time.Millisecond))
	}
	defer func() {
		start := time.Now()
		runc(ctx, cfg, "delete", "--force", containerID)
		if cfg.Verbose {
			cfg.Report.Infof("runc delete took %s", time.Since(start).Round(10*time.Millisecond))
		}
	}()
	pidText, err := os.ReadFile(p.pidFile)
	if err != nil {
		return ExitNotStarted, fmt.Errorf("runc create left no pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		return ExitNotStarted, fmt.Errorf("pid file %s: %w", p.pidFile, err)
	}
	started := time.Now()
	if msg, err := runc(ctx, cfg, "start", containerID); err != nil {
		return ExitNotStarted, fmt.Errorf("runc start: %w: %s", err, msg)
	}
	if cfg.Verbose {
		defer func() {
			cfg.Report.Infof("the command ran %s after runc start", time.Since(started).Round(10*time.Millisecond))
		}()
	}
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return ExitNotStarted, fmt.Errorf("wait for the container's process %d: %w", pid, err)
		}
		break
	}
	<-copied
	switch {
	case ws.Exited():
		return ws.ExitStatus(), nil
	case ws.Signaled():
		return 128 + int(ws.Signal()), nil
	}
	return ExitNotStarted, fmt.Errorf("the container's process ended with status %v", ws)
}

// writeSpec writes config.json.
func writeSpec(file string, s *specs.Spec) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER (linux/prctl.h).
const prSetChildSubreaper = 36

func runc(ctx context.Context, cfg Config, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, cfg.Runc, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// startGate holds what comes through the container's output pipe until the container
// has been created: before that only runc writes there, and its words are an error
// message, not the command's output.
type startGate struct {
	w    io.Writer
	held bytes.Buffer
	mu   sync.Mutex
	on   bool
}

func (g *startGate) Write(b []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on {
		return g.held.Write(b)
	}
	return g.w.Write(b)
}

func (g *startGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.on = true
	g.w.Write(g.held.Bytes())
	g.held.Reset()
}

// reportEvents reports the enforcer's events file.
func reportEvents(rep *Reporter, file string) {
	f, err := os.Open(file)
	if err != nil {
		rep.Infof("no events: %v", err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec event.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			rep.Infof("unreadable event %q: %v", sc.Text(), err)
			continue
		}
		rep.Event(rec)
	}
}

// enforcerProcess is the standalone enforcer the runner started.
type enforcerProcess struct {
	cmd     *exec.Cmd
	done    chan error
	stopped bool
	err     error
}

// startEnforcer starts `podarmor-enforcer standalone` with the policy and waits until
// its hook socket answers.
func startEnforcer(ctx context.Context, cfg Config, p paths) (*enforcerProcess, error) {
	logFile, err := os.Create(p.enforcerLog)
	if err != nil {
		return nil, err
	}
	args := []string{"standalone",
		"--policy", cfg.PolicyFile,
		"--socket", p.socket,
		"--events", p.events,
		"--seccomp-root", p.seccompRoot,
		"--apparmor-dir", p.apparmorDir,
		"--unprotected-dir", p.unprotected,
		"--log-format", "text",
	}
	for _, a := range cfg.Compile.APIServer {
		args = append(args, "--apiserver-address", a.String())
	}
	for _, c := range cfg.Compile.ClusterCIDRs {
		args = append(args, "--cluster-cidr", c.String())
	}
	cmd := exec.Command(cfg.Enforcer, args...)
	var logW io.Writer = logFile
	var logPipe *io.PipeWriter
	if cfg.Verbose {
		pr, pw := io.Pipe()
		logW, logPipe = io.MultiWriter(logFile, pw), pw
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				cfg.Report.Log(sc.Text())
			}
			io.Copy(io.Discard, pr)
		}()
	}
	cmd.Stdout, cmd.Stderr = logW, logW
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start the enforcer: %w", err)
	}
	e := &enforcerProcess{cmd: cmd, done: make(chan error, 1)}
	go func() {
		err := cmd.Wait()
		logFile.Close()
		if logPipe != nil {
			logPipe.Close()
		}
		e.done <- err
	}()
	// Loading BPF programs under emulation takes seconds.
	deadline := time.NewTimer(3 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-e.done:
			e.stopped, e.err = true, err
			return nil, fmt.Errorf("the enforcer exited before it was ready (%v):\n%s", err, tail(p.enforcerLog, 20))
		case <-deadline.C:
			e.stop()
			return nil, fmt.Errorf("the enforcer was not ready after 3 minutes:\n%s", tail(p.enforcerLog, 20))
		case <-ctx.Done():
			e.stop()
			return nil, ctx.Err()
		case <-tick.C:
			if conn, err := net.Dial("unix", p.socket); err == nil {
				conn.Close()
				cfg.Report.Infof("enforcer ready in %s", time.Since(start).Round(100*time.Millisecond))
				return e, nil
			}
		}
	}
}

// stop stops the enforcer with SIGTERM (SIGKILL after 10 s) and waits for it.
func (e *enforcerProcess) stop() error {
	if e.stopped {
		return e.err
	}
	e.stopped = true
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.done:
		e.err = err
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		e.err = fmt.Errorf("did not stop within 10 s: %v", <-e.done)
	}
	return e.err
}

// tail returns the last n lines of a file.
func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
