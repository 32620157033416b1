// Package registrar keeps the BPF enforcer's registration table (mount namespace ->
// profile) equal to the sandboxed containers running on the node. It answers the OCI
// hook (enforcer/hook), which registers a container before its first instruction;
// registers late the containers the hook let run while the enforcer was away; and
// reconciles against the containers it is told are running: a sandboxed container that
// is missing is registered, a registration whose mount namespace no process uses any
// more is removed (the kernel reuses namespace inode numbers, and a stale registration
// would confine whatever namespace gets the number next).
//
// Which profile a container has is the Resolver's: the standalone enforcer reads the
// container's annotation, the Kubernetes mode its pod's label.
package registrar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/tables"
)

// Registry is the BPF enforcer's registration table (enforcer/bpf.Enforcer).
type Registry interface {
	Register(mntns uint32, profile string, late bool) error
	Unregister(mntns uint32) error
	Registered() (map[uint32]tables.Registration, error)
}

// Resolver says which profile a container has: "" when it is not sandboxed, an error
// when that cannot be known (the hook then refuses the container).
type Resolver func(ctx context.Context, req hook.Request) (string, error)

// Profiles says whether a profile is loaded on the node, and whether BPF enforces it.
type Profiles func(id string) (loaded, bpf bool, err error)

// Source says how a registration came about.
type Source string

// Sources of registrations.
const (
	// SourceHook is the OCI hook: before the container's first instruction.
	SourceHook Source = "hook"
	// SourceUnprotected is a container the hook let run while the enforcer was away.
	SourceUnprotected Source = "unprotected"
	// SourceReconcile is a running container reconciliation found unregistered.
	SourceReconcile Source = "reconcile"
)

// Observer is told of every registration attempt; delay is how long the container ran
// before it was registered (0 for the hook).
type Observer func(src Source, profile string, delay time.Duration, err error)

// Config configures a Registrar.
type Config struct {
	// Registry is the BPF registration table; nil when no profile uses BPF.
	Registry Registry
	Resolve  Resolver
	Profiles Profiles
	// Proc is where procfs is mounted; "/proc" when empty.
	Proc string
	// Observe, if set, is told of every registration attempt.
	Observe Observer
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// registration is one registered container.
type registration struct {
	mntns   uint32
	profile string
	// pid is the container's process the registration was made for.
	pid int
	// at is when the registration was made.
	at time.Time
}

// Registrar registers containers. It is safe for concurrent use.
type Registrar struct {
	cfg    Config
	log    *slog.Logger
	hostNS uint32

	mu   sync.Mutex
	byID map[string]registration
	byNS map[uint32]string
	// unregistered counts the sandboxed containers the last reconciliation could not
	// register.
	unregistered int
}

// New returns a Registrar.
func New(cfg Config) (*Registrar, error) {
	if cfg.Resolve == nil || cfg.Profiles == nil {
		return nil, errors.New("registrar: Resolve and Profiles are required")
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Registrar{cfg: cfg, log: cfg.Logger, byID: map[string]registration{}, byNS: map[uint32]string{}}
	host, err := r.mountNamespace(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("registrar: the enforcer's own mount namespace: %w", err)
	}
	r.hostNS = host
	return r, nil
}

// Handle implements hook.Handler.
func (r *Registrar) Handle(ctx context.Context, req hook.Request) (hook.Response, error) {
	if req.Op == hook.OpUnregister {
		return r.unregister(req.ContainerID)
	}
	return r.register(ctx, req, SourceHook, 0)
}

func (r *Registrar) register(ctx context.Context, req hook.Request, src Source, delay time.Duration) (resp hook.Response, err error) {
	profile, err := r.cfg.Resolve(ctx, req)
	if err != nil {
		err = fmt.Errorf("container %s: %w", req.ContainerID, err)
		r.observe(src, "", delay, err)
		return hook.Response{}, err
	}
	if profile == "" {
		return hook.Response{}, nil
	}
	defer func() { r.observe(src, profile, delay, err) }()
	loaded, usesBPF, err := r.cfg.Profiles(profile)
	switch {
	case err != nil:
		return hook.Response{}, fmt.Errorf("container %s: profile %s: %w", req.ContainerID, profile, err)
	case !loaded:
		return hook.Response{}, fmt.Errorf("container %s: profile %s is not loaded on this node", req.ContainerID, profile)
	case !usesBPF:
		// AppArmor and seccomp are the runtime's to apply; nothing to register.
		return hook.Response{Profile: profile}, nil
	case r.cfg.Registry == nil:
		return hook.Response{}, fmt.Errorf("container %s: profile %s needs the BPF enforcer, which is not running on this node", req.ContainerID, profile)
	}
	ns, err := r.mountNamespace(req.PID)
	if err != nil {
		return hook.Response{}, fmt.Errorf("container %s: %w", req.ContainerID, err)
	}
	if ns == r.hostNS {
		return hook.Response{}, fmt.Errorf("container %s shares the node's mount namespace; confining it would confine the node", req.ContainerID)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.byID[req.ContainerID]; ok && prev.mntns == ns && prev.profile == profile && src == SourceHook {
		// A repeated hook must not register again: that would disarm a running
		// container until its next exec. (Reconciliation gets here only when the
		// kernel lost the registration.)
		return hook.Response{Profile: profile, MountNamespace: ns}, nil
	}
	if other, ok := r.byNS[ns]; ok && other != req.ContainerID {
		if cur, err := r.mountNamespace(r.byID[other].pid); err == nil && cur == ns {
			return hook.Response{}, fmt.Errorf("container %s: mount namespace %d is registered for container %s", req.ContainerID, ns, other)
		}
		// The other container is gone and the kernel gave its namespace's inode
		// number to this one's.
		delete(r.byID, other)
		delete(r.byNS, ns)
	}
	if err := r.cfg.Registry.Register(ns, profile, src != SourceHook); err != nil {
		return hook.Response{}, fmt.Errorf("container %s: %w", req.ContainerID, err)
	}
	if prev, ok := r.byID[req.ContainerID]; ok && prev.mntns != ns {
		delete(r.byNS, prev.mntns)
	}
	r.byID[req.ContainerID] = registration{ns, profile, req.PID, time.Now()}
	r.byNS[ns] = req.ContainerID
	return hook.Response{Profile: profile, MountNamespace: ns}, nil
}

func (r *Registrar) observe(src Source, profile string, delay time.Duration, err error) {
	if r.cfg.Observe != nil {
		r.cfg.Observe(src, profile, delay, err)
	}
}

func (r *Registrar) unregister(id string) (hook.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg, ok := r.byID[id]
	if !ok {
		return hook.Response{}, nil
	}
	if err := r.cfg.Registry.Unregister(reg.mntns); err != nil {
		return hook.Response{}, fmt.Errorf("container %s: %w", id, err)
	}
	delete(r.byID, id)
	delete(r.byNS, reg.mntns)
	return hook.Response{Profile: reg.profile, MountNamespace: reg.mntns}, nil
}

// ContainerOf is the container registered with a mount namespace, "" if none.
func (r *Registrar) ContainerOf(ns uint32) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byNS[ns]
}

// Has reports whether container id is registered.
func (r *Registrar) Has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.byID[id]
	return ok
}

// Registered counts the containers registered by this registrar.
func (r *Registrar) Registered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.byID)
}

// Unregistered counts the running sandboxed containers the last reconciliation could
// not register. It should be 0.
func (r *Registrar) Unregistered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unregistered
}

// AdoptUnprotected registers, late, the containers the hook let run while the enforcer
// was away, and removes their records. A container that is gone, or whose process is now
// in another namespace, is dropped.
func (r *Registrar) AdoptUnprotected(ctx context.Context, dir string) {
	recs, files, err := hook.ReadUnprotected(dir)
	if err != nil {
		r.log.Warn("unprotected containers", "dir", dir, "error", err)
	}
	for i, u := range recs {
		var resp hook.Response
		ns, err := r.mountNamespace(u.PID)
		if err == nil && u.MountNamespace != 0 && ns != u.MountNamespace {
			err = fmt.Errorf("pid %d is in mount namespace %d now, not %d: the container is gone", u.PID, ns, u.MountNamespace)
		}
		if err == nil {
			resp, err = r.register(ctx, u.Request, SourceUnprotected, time.Since(u.Time))
		}
		switch {
		case err != nil:
			r.log.Warn("container that ran unprotected could not be registered", "container", u.ContainerID, "since", u.Time, "error", err)
		default:
			r.log.Warn("container that ran unprotected is registered now", "container", u.ContainerID, "since", u.Time,
				"profile", resp.Profile, "mntns", resp.MountNamespace)
		}
		os.Remove(files[i])
	}
}

// Running is a container the runtime (or a scan of /proc) says is running.
type Running struct {
	// Request is what the hook would have sent: container ID, the PID of a process of
	// the container (in the container's own mount namespace), annotations.
	hook.Request
	// Started is when the container's process started; zero if unknown.
	Started time.Time
}

// Reconciled is what one reconciliation did.
type Reconciled struct {
	// Registered are the containers registered late now.
	Registered []string
	// Failed are the sandboxed containers that could not be registered, with why.
	Failed map[string]error
	// Removed are the mount namespaces unregistered because no process uses them.
	Removed []uint32
	// Adopted are registrations found in the kernel (left by a previous enforcer) and
	// matched to a running container.
	Adopted []string
	// Unreadable counts the processes whose mount namespace could not be read (not
	// because they exited: refused, e.g. by a container's ptrace rule guarding its
	// /proc/<pid>/ns links). Any of them leaves the live namespaces unknown, and then
	// nothing is removed: a registration of a running container must never go.
	Unreadable int
}

// Reconcile makes the registrations match running, which must list every container
// of the node that may be sandboxed: containers of running that are sandboxed and not
// registered (or registered under a namespace their process left) are registered late;
// registrations in the kernel that match a container of running are adopted; the others
// are removed when no process of the node is in their mount namespace any more.
func (r *Registrar) Reconcile(ctx context.Context, running []Running) (Reconciled, error) {
	out := Reconciled{Failed: map[string]error{}}
	if r.cfg.Registry == nil {
		return out, nil
	}
	start := time.Now()
	inKernel, err := r.cfg.Registry.Registered()
	if err != nil {
		return out, fmt.Errorf("registrar: read registrations: %w", err)
	}
	live, unreadable, err := r.liveNamespaces()
	if err != nil {
		return out, err
	}
	out.Unreadable = unreadable
	// Removals need every live namespace known.
	mayRemove := unreadable == 0

	r.mu.Lock()
	seen := map[string]bool{}
	var todo, adopt []Running
	for _, c := range r.withNamespaces(running) {
		if c.mntns == 0 {
			continue // its process is gone: the container stopped meanwhile
		}
		seen[c.ContainerID] = true
		reg, known := r.byID[c.ContainerID]
		_, inK := inKernel[c.mntns]
		switch {
		case known && reg.mntns == c.mntns && inK:
		case !known && inK && r.byNS[c.mntns] == "":
			adopt = append(adopt, c.Running)
		default:
			todo = append(todo, c.Running)
		}
	}
	// Forget what this registrar knows of containers that are not running any more
	// (not those registered since the reconciliation began: see below).
	for id, reg := range r.byID {
		if mayRemove && !seen[id] && !live[reg.mntns] && reg.at.Before(start) {
			delete(r.byID, id)
			delete(r.byNS, reg.mntns)
		}
	}
	r.mu.Unlock()

	// Registrations a previous enforcer made: take them over as they are (registering
	// again would disarm them until the container's next exec).
	for _, c := range adopt {
		profile, err := r.cfg.Resolve(ctx, c.Request)
		if err != nil || profile == "" {
			continue // removed below if its namespace is dead; left alone otherwise
		}
		ns, err := r.mountNamespace(c.PID)
		if err != nil {
			continue
		}
		r.mu.Lock()
		if _, taken := r.byNS[ns]; !taken {
			r.byID[c.ContainerID] = registration{ns, profile, c.PID, time.Now()}
			r.byNS[ns] = c.ContainerID
			out.Adopted = append(out.Adopted, c.ContainerID)
		}
		r.mu.Unlock()
	}

	for _, c := range todo {
		delay := time.Duration(0)
		if !c.Started.IsZero() {
			delay = time.Since(c.Started)
		}
		resp, err := r.register(ctx, c.Request, SourceReconcile, delay)
		switch {
		case err != nil:
			out.Failed[c.ContainerID] = err
		case resp.MountNamespace != 0:
			out.Registered = append(out.Registered, c.ContainerID)
		}
	}

	for ns := range inKernel {
		if live[ns] || !mayRemove {
			continue
		}
		// Under the lock, so that no hook registers meanwhile: a namespace that was dead
		// when /proc was read may have been given, number and all, to a container
		// registered since. Its registration must stay.
		r.mu.Lock()
		id, known := r.byNS[ns]
		if known && !r.byID[id].at.Before(start) {
			r.mu.Unlock()
			continue
		}
		if err := r.cfg.Registry.Unregister(ns); err != nil {
			r.mu.Unlock()
			return out, fmt.Errorf("registrar: remove the registration of dead mount namespace %d: %w", ns, err)
		}
		if known {
			delete(r.byID, id)
			delete(r.byNS, ns)
		}
		r.mu.Unlock()
		out.Removed = append(out.Removed, ns)
	}

	r.mu.Lock()
	r.unregistered = len(out.Failed)
	r.mu.Unlock()
	return out, nil
}

// runningNS is a running container with its mount namespace (0 when unreadable).
type runningNS struct {
	Running
	mntns uint32
}

func (r *Registrar) withNamespaces(running []Running) []runningNS {
	out := make([]runningNS, 0, len(running))
	for _, c := range running {
		ns, _ := r.mountNamespace(c.PID)
		out = append(out, runningNS{c, ns})
	}
	return out
}

// liveNamespaces are the mount namespaces some process of the node is in, and how many
// processes' namespaces could not be read for another reason than their exit.
func (r *Registrar) liveNamespaces() (live map[uint32]bool, unreadable int, err error) {
	entries, err := os.ReadDir(r.cfg.Proc)
	if err != nil {
		return nil, 0, fmt.Errorf("registrar: %w", err)
	}
	live = map[uint32]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := r.mountNamespace(pid)
		switch {
		case err == nil:
			live[ns] = true
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ESRCH):
			// exited meanwhile
		default:
			unreadable++
		}
	}
	return live, unreadable, nil
}

// mountNamespace is the mount namespace inode of a process.
func (r *Registrar) mountNamespace(pid int) (uint32, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no pid")
	}
	ns, err := hook.MountNamespace(filepath.Join(r.cfg.Proc, strconv.Itoa(pid), "ns", "mnt"))
	if err != nil {
		return 0, fmt.Errorf("mount namespace of pid %d: %w", pid, err)
	}
	return ns, nil
}
