package hook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// OnUnavailable is what the OCI hook does with a container when the enforcer cannot be
// reached or does not answer in time.
type OnUnavailable string

const (
	// Refuse fails the hook, and the runtime does not start the container. The default:
	// a sandboxed container never runs unconfined by BPF.
	Refuse OnUnavailable = "refuse"
	// Allow lets the container run without its BPF registration, logs that and records
	// the container in the unprotected directory, where the enforcer finds it when it
	// is back and registers it late (AppArmor and seccomp confine it regardless: the
	// runtime applies them itself).
	Allow OnUnavailable = "allow"
)

// ParseOnUnavailable checks a setting's value.
func ParseOnUnavailable(s string) (OnUnavailable, error) {
	switch v := OnUnavailable(strings.ToLower(s)); v {
	case Refuse, Allow:
		return v, nil
	}
	return "", fmt.Errorf("%q: want %s or %s", s, Refuse, Allow)
}

// DefaultUnprotectedDir is where the hook records containers it let run without a
// registration.
const DefaultUnprotectedDir = "/run/podarmor/unprotected"

// OCIConfig configures RunOCI.
type OCIConfig struct {
	// Client reaches the enforcer.
	Client Client
	// OnUnavailable is Refuse when empty.
	OnUnavailable OnUnavailable
	// UnprotectedDir is where a container let through unregistered is recorded (a
	// JSON Request named after the container ID); DefaultUnprotectedDir when empty.
	UnprotectedDir string
	// Logger; slog.Default() when nil. The runtime shows what the hook writes to stderr
	// when the hook fails.
	Logger *slog.Logger
}

// RunOCI is the OCI hook: it reads the container's state (runtime-spec State, as the
// runtime writes it to a hook's stdin), registers the container with the enforcer at
// createRuntime (any status but "stopped") and unregisters it at poststop ("stopped").
// A nil error lets the runtime go on; an error aborts the container.
//
// Registering fails closed: unless OnUnavailable is Allow, any failure to register is an
// error, and a refusal by the enforcer always is. Unregistering never fails the runtime:
// the container is gone, and the enforcer forgets namespaces that no longer exist.
func RunOCI(ctx context.Context, cfg OCIConfig, stdin io.Reader) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.OnUnavailable == "" {
		cfg.OnUnavailable = Refuse
	}
	if cfg.UnprotectedDir == "" {
		cfg.UnprotectedDir = DefaultUnprotectedDir
	}
	state, err := ReadState(stdin)
	if err != nil {
		return err
	}
	req := Request{
		Op:          OpRegister,
		ContainerID: state.ID,
		PID:         state.Pid,
		Status:      string(state.Status),
		Bundle:      state.Bundle,
		Annotations: state.Annotations,
	}
	if state.Status == specs.StateStopped {
		req.Op, req.PID = OpUnregister, 0
	}
	_, err = cfg.Client.Do(ctx, req)
	switch {
	case err == nil:
		return nil
	case req.Op == OpUnregister:
		log.Warn("podarmor: unregister container", "container", req.ContainerID, "error", err)
		return nil
	case IsUnavailable(err) && cfg.OnUnavailable == Allow:
		log.Error("podarmor: container runs WITHOUT its BPF registration: the enforcer is unavailable and the hook is set to allow",
			"container", req.ContainerID, "pid", req.PID, "error", err)
		if rerr := recordUnprotected(cfg.UnprotectedDir, req); rerr != nil {
			log.Error("podarmor: record unprotected container", "container", req.ContainerID, "error", rerr)
		}
		return nil
	}
	return fmt.Errorf("podarmor: container %s not started: %w", req.ContainerID, err)
}

// ReadState reads and checks the OCI state a runtime passes to a hook.
func ReadState(r io.Reader) (*specs.State, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("read the container state from stdin: %w", err)
	}
	if len(data) > MaxMessage {
		return nil, fmt.Errorf("the container state on stdin is larger than %d bytes", MaxMessage)
	}
	var s specs.State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("the container state on stdin: %w (run as an OCI hook, which gets the state from the runtime)", err)
	}
	if s.ID == "" {
		return nil, errors.New("the container state on stdin has no id")
	}
	if s.Status != specs.StateStopped && s.Pid <= 0 {
		return nil, fmt.Errorf("the state of container %s (status %q) has no pid", s.ID, s.Status)
	}
	return &s, nil
}

// Unprotected is a container the hook let run without a registration.
type Unprotected struct {
	Request
	// Time is when the hook let it through.
	Time time.Time `json:"time"`
	// MountNamespace is the container's mount namespace then (0 when the hook could
	// not read it): the enforcer registers the process later only if it is still there,
	// not a process that got the pid since.
	MountNamespace uint32 `json:"mountNamespace,omitempty"`
}

// recordUnprotected writes req to dir/<id>.json, atomically.
func recordUnprotected(dir string, req Request) error {
	if req.ContainerID != filepath.Base(req.ContainerID) || strings.HasPrefix(req.ContainerID, ".") {
		return fmt.Errorf("container ID %q is not a file name", req.ContainerID)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	u := Unprotected{Request: req, Time: time.Now().UTC()}
	u.MountNamespace, _ = MountNamespace(fmt.Sprintf("/proc/%d/ns/mnt", req.PID))
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, req.ContainerID+".json"))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// ReadUnprotected lists the containers recorded in dir, for an enforcer that starts
// to register them late. Files it cannot read are reported in the error and skipped.
func ReadUnprotected(dir string) ([]Unprotected, []string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var out []Unprotected
	var files []string
	var errs []error
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var u Unprotected
		if err := json.Unmarshal(data, &u); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
			continue
		}
		out = append(out, u)
		files = append(files, path)
	}
	return out, files, errors.Join(errs...)
}

// MountNamespace returns the inode of the mount namespace a /proc/<pid>/ns/mnt link
// names.
func MountNamespace(link string) (uint32, error) {
	target, err := os.Readlink(link)
	if err != nil {
		return 0, err
	}
	// "mnt:[4026531841]"
	s, ok := strings.CutPrefix(target, "mnt:[")
	if !ok || !strings.HasSuffix(s, "]") {
		return 0, fmt.Errorf("%s: unexpected link %q", link, target)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", link, err)
	}
	return uint32(n), nil
}
