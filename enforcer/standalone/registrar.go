package standalone

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/podarmor/podarmor/enforcer/hook"
)

// Registry is the BPF enforcer's registration table (enforcer/bpf.Enforcer).
type Registry interface {
	Register(mntns uint32, profile string, late bool) error
	Unregister(mntns uint32) error
}

// registration is one registered container.
type registration struct {
	mntns   uint32
	profile string
}

// registrar answers the OCI hook: it maps a container to its profile and registers the
// container's mount namespace with the BPF enforcer.
type registrar struct {
	log *slog.Logger
	// bpf is nil when no policy uses the BPF enforcer.
	bpf Registry
	// profiles are the loaded profile IDs, with whether BPF enforces them.
	profiles map[string]bool
	// containers maps container IDs to profile IDs, before annotations.
	containers map[string]string
	// hostNS is the node's own mount namespace, which is never registered.
	hostNS uint32
	// proc is where procfs is mounted.
	proc string

	mu   sync.Mutex
	byID map[string]registration
	byNS map[uint32]string
}

func newRegistrar(log *slog.Logger, bpf Registry, profiles map[string]bool, containers map[string]string, proc string) (*registrar, error) {
	r := &registrar{
		log: log, bpf: bpf, profiles: profiles, containers: containers, proc: proc,
		byID: map[string]registration{}, byNS: map[uint32]string{},
	}
	host, err := r.mountNamespace(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("the enforcer's own mount namespace: %w", err)
	}
	r.hostNS = host
	return r, nil
}

// profileOf is the profile a container asks for: the configured mapping first, then the
// podarmor.io/profile annotation. "" means the container is not sandboxed.
func (r *registrar) profileOf(req hook.Request) string {
	if p, ok := r.containers[req.ContainerID]; ok {
		return p
	}
	return req.Annotations[hook.AnnotationProfile]
}

// Handle implements hook.Handler.
func (r *registrar) Handle(_ context.Context, req hook.Request) (hook.Response, error) {
	if req.Op == hook.OpUnregister {
		return r.unregister(req.ContainerID)
	}
	return r.register(req, false)
}

func (r *registrar) register(req hook.Request, late bool) (hook.Response, error) {
	profile := r.profileOf(req)
	if profile == "" {
		return hook.Response{}, nil
	}
	usesBPF, ok := r.profiles[profile]
	if !ok {
		return hook.Response{}, fmt.Errorf("profile %s is not loaded on this node (loaded: %s)",
			profile, strings.Join(slices.Sorted(maps.Keys(r.profiles)), ", "))
	}
	if !usesBPF {
		// AppArmor and seccomp are the runtime's to apply; nothing to register.
		return hook.Response{Profile: profile}, nil
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
	if prev, ok := r.byID[req.ContainerID]; ok && prev == (registration{ns, profile}) {
		// A repeated hook must not register again: that would disarm a running
		// container until its next exec.
		return hook.Response{Profile: profile, MountNamespace: ns}, nil
	}
	if other, ok := r.byNS[ns]; ok && other != req.ContainerID {
		return hook.Response{}, fmt.Errorf("container %s: mount namespace %d is registered for container %s", req.ContainerID, ns, other)
	}
	if err := r.bpf.Register(ns, profile, late); err != nil {
		return hook.Response{}, fmt.Errorf("container %s: %w", req.ContainerID, err)
	}
	r.byID[req.ContainerID] = registration{ns, profile}
	r.byNS[ns] = req.ContainerID
	return hook.Response{Profile: profile, MountNamespace: ns}, nil
}

func (r *registrar) unregister(id string) (hook.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg, ok := r.byID[id]
	if !ok {
		return hook.Response{}, nil
	}
	if err := r.bpf.Unregister(reg.mntns); err != nil {
		return hook.Response{}, fmt.Errorf("container %s: %w", id, err)
	}
	delete(r.byID, id)
	delete(r.byNS, reg.mntns)
	return hook.Response{Profile: reg.profile, MountNamespace: reg.mntns}, nil
}

// containerOf is the container registered with a mount namespace, "" if none.
func (r *registrar) containerOf(ns uint32) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byNS[ns]
}

// adoptUnprotected registers, late, the containers the hook let run while the enforcer
// was away, and removes their records. A container that is gone, or whose process is now
// in another namespace, is dropped.
func (r *registrar) adoptUnprotected(dir string) {
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
			resp, err = r.register(u.Request, true)
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

// mountNamespace is the mount namespace inode of a process.
func (r *registrar) mountNamespace(pid int) (uint32, error) {
	ns, err := hook.MountNamespace(filepath.Join(r.proc, strconv.Itoa(pid), "ns", "mnt"))
	if err != nil {
		return 0, fmt.Errorf("mount namespace of pid %d: %w", pid, err)
	}
	return ns, nil
}
