// Package standalone runs the node enforcer without Kubernetes: policies come from
// files, containers are mapped to profiles by their OCI annotation podarmor.io/profile
// (or a fixed mapping), and events go to a file as JSON lines. It is what `podarmor try`
// runs inside its VM, and the first piece of the node agent: the Kubernetes mode adds
// the pod informer, NRI, reconciliation and status on top of the same parts.
//
// On start it compiles every policy, loads the BPF object and installs the BPF profiles
// (enforcer/bpf), loads the AppArmor profiles (apparmor_parser -r, checked in
// securityfs), writes the seccomp profiles under the seccomp root, registers containers
// the OCI hook let run while it was away, and only then opens the hook socket: a hook
// that gets an answer gets it from an enforcer with every profile in place. On stop it
// closes the socket and leaves everything loaded: pinned BPF state, AppArmor profiles
// and seccomp files keep confining the containers.
package standalone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/podarmor/podarmor/enforcer/apparmor"
	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/policyset"
	"github.com/podarmor/podarmor/enforcer/registrar"
	"github.com/podarmor/podarmor/enforcer/seccomp"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	compileapparmor "github.com/podarmor/podarmor/policies/compile/apparmor"
	compilebpf "github.com/podarmor/podarmor/policies/compile/bpf"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// DefaultDrain is how long events are still read after the enforcer is told to stop.
const DefaultDrain = 500 * time.Millisecond

// Config configures Run.
type Config struct {
	// PolicyFiles hold the ArmorPolicies and ClusterArmorPolicies to enforce. Required.
	PolicyFiles []string
	// Compile are the compiler's options ($APISERVER, $CLUSTER_CIDRS).
	Compile compile.Options
	// Socket is the hook socket; hook.DefaultSocket when empty.
	Socket string
	// HookTimeout bounds one hook request; hook.DefaultTimeout when zero.
	HookTimeout time.Duration
	// Containers maps container IDs to profile IDs; containers not listed are mapped by
	// their podarmor.io/profile annotation.
	Containers map[string]string
	// UnprotectedDir is where the hook records containers it let run without a
	// registration; hook.DefaultUnprotectedDir when empty.
	UnprotectedDir string
	// PinDir is the BPF enforcer's bpffs directory; bpf.DefaultPinDir when empty.
	PinDir string
	// AppArmor configures loading AppArmor profiles.
	AppArmor apparmor.Config
	// SeccompRoot is the seccomp root (seccomp.DefaultRoot when empty): profiles go to
	// <root>/podarmor/<id>.json.
	SeccompRoot string
	// Events receives one JSON line (event.Record) per decision. Required.
	Events io.Writer
	// Kmsg is the kernel log device AppArmor's audit messages are read from; "/dev/kmsg"
	// when empty.
	Kmsg string
	// Proc is where procfs is mounted; "/proc" when empty.
	Proc string
	// Drain is how long events are still read after ctx ends; DefaultDrain when zero.
	Drain time.Duration
	// Ready, if set, is called once the hook socket accepts requests.
	Ready func()
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if len(c.PolicyFiles) == 0 {
		return errors.New("standalone: no policy file")
	}
	if c.Events == nil {
		return errors.New("standalone: no event writer")
	}
	if c.UnprotectedDir == "" {
		c.UnprotectedDir = hook.DefaultUnprotectedDir
	}
	if c.Kmsg == "" {
		c.Kmsg = "/dev/kmsg"
	}
	if c.Proc == "" {
		c.Proc = "/proc"
	}
	if c.Drain == 0 {
		c.Drain = DefaultDrain
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Run enforces the policies until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	policies, err := policyset.Read(cfg.PolicyFiles, cfg.Compile)
	if err != nil {
		return err
	}

	profiles := map[string]bool{} // profile ID -> BPF enforces it
	var bpfProfiles []*compilebpf.Profile
	var aaPolicies []policyset.Compiled
	seccompStore := seccomp.Store{Root: cfg.SeccompRoot}
	for _, p := range policies {
		id := p.ProfileID()
		profiles[id] = false
		for _, prof := range p.Result.Profiles {
			for _, u := range prof.Unsupported {
				log.Debug("rule left to the policy's other enforcers", "profile", id, "enforcer", prof.Enforcer, "rule", u.RuleID, "reason", u.Reason)
			}
			if prof.Content == nil {
				log.Info("nothing to load", "profile", id, "enforcer", prof.Enforcer, "mode", p.Result.RuleSet.Mode)
				continue
			}
			switch prof.Enforcer {
			case v1alpha1.EnforcerBPF:
				var bp compilebpf.Profile
				if err := json.Unmarshal(prof.Content, &bp); err != nil {
					return fmt.Errorf("%s: BPF profile: %w", p.Source, err)
				}
				bpfProfiles = append(bpfProfiles, &bp)
				profiles[id] = true
			case v1alpha1.EnforcerAppArmor:
				aaPolicies = append(aaPolicies, p)
			case v1alpha1.EnforcerSeccomp:
				file, err := seccompStore.Write(id, prof.Content)
				if err != nil {
					return err
				}
				log.Info("seccomp profile written", "profile", id, "file", file)
			}
		}
	}
	var registry registrar.Registry // nil without BPF profiles
	var enf *bpf.Enforcer
	if len(bpfProfiles) > 0 {
		start := time.Now()
		if enf, err = bpf.Load(bpf.Options{PinDir: cfg.PinDir, Logger: log}); err != nil {
			return err
		}
		defer enf.Close()
		for _, h := range enf.Hooks() {
			if !h.Attached {
				log.Warn("LSM hook not attached: rules that need it are not enforced by BPF", "hook", h.Name, "reason", h.Reason)
			}
		}
		for _, bp := range bpfProfiles {
			if err := enf.SetProfile(bp); err != nil {
				return err
			}
		}
		registry = enf
		log.Info("BPF enforcer loaded", "profiles", len(bpfProfiles), "took", time.Since(start).Round(time.Millisecond))
	}
	reg, err := registrar.New(registrar.Config{
		Registry: registry,
		Resolve: func(_ context.Context, req hook.Request) (string, error) {
			if p, ok := cfg.Containers[req.ContainerID]; ok {
				return p, nil
			}
			return req.Annotations[hook.AnnotationProfile], nil
		},
		Profiles: func(id string) (bool, bool, error) {
			usesBPF, ok := profiles[id]
			return ok, usesBPF, nil
		},
		Proc:   cfg.Proc,
		Logger: log,
	})
	if err != nil {
		return err
	}

	// Event readers outlive ctx by the drain (see the end).
	events := event.NewWriter(cfg.Events)
	evCtx, stopEvents := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEvents()
	var readers []<-chan struct{}

	if enf != nil {
		ch, err := enf.Events(evCtx)
		if err != nil {
			return err
		}
		readers = append(readers, pump(ch, events, log, func(ev bpf.Event) (event.Record, bool) {
			r := event.FromBPF(ev.Event, ev.Profile, ev.Rule, ev.PathText, ev.Address)
			r.Container = reg.ContainerOf(r.MountNamespace)
			return r, true
		}))
	}

	if len(aaPolicies) > 0 {
		start := time.Now()
		loader, err := apparmor.New(cfg.AppArmor)
		if err != nil {
			return err
		}
		// The kernel log is opened before the profiles load, so no decision is missed.
		lines, err := readKmsg(evCtx, cfg.Kmsg)
		if err != nil {
			log.Warn("AppArmor decisions will not be reported", "error", err)
		} else {
			rulesets := map[string]*ruleset.RuleSet{}
			for _, p := range aaPolicies {
				rulesets[p.ProfileID()] = p.Result.RuleSet
			}
			readers = append(readers, pump(lines, events, log, func(line string) (event.Record, bool) {
				r, ok := event.FromAppArmor(line)
				if !ok {
					return r, false
				}
				event.Attribute(rulesets[r.Profile], &r)
				if ns, err := hook.MountNamespace(filepath.Join(cfg.Proc, strconv.Itoa(int(r.PID)), "ns", "mnt")); err == nil {
					r.MountNamespace = ns
					r.Container = reg.ContainerOf(ns)
				}
				return r, true
			}))
		}
		for _, p := range aaPolicies {
			name := compileapparmor.ProfileName(p.ProfileID())
			if err := loader.Load(ctx, name, p.Profile(v1alpha1.EnforcerAppArmor)); err != nil {
				return fmt.Errorf("%s: %w", p.Source, err)
			}
		}
		log.Info("AppArmor profiles loaded", "profiles", len(aaPolicies), "took", time.Since(start).Round(time.Millisecond))
	}

	if registry != nil {
		reg.AdoptUnprotected(ctx, cfg.UnprotectedDir)
	}
	srv, err := hook.Listen(hook.ServerConfig{Socket: cfg.Socket, Handler: reg, Timeout: cfg.HookTimeout, Logger: log})
	if err != nil {
		return err
	}
	log.Info("enforcer ready", "socket", srv.Addr(), "profiles", slices.Sorted(maps.Keys(profiles)))
	if cfg.Ready != nil {
		cfg.Ready()
	}
	err = srv.Serve(ctx)

	// Decisions made just before the stop may still be in the ring buffer or the
	// kernel log: give the readers a moment to pass them on.
	time.Sleep(cfg.Drain)
	stopEvents()
	for _, done := range readers {
		select {
		case <-done:
		case <-time.After(time.Second):
			log.Warn("an event reader did not stop")
		}
	}
	return err
}

// pump writes a record for each value of ch that record turns into one, until ch
// closes; the returned channel closes then.
func pump[T any](ch <-chan T, w *event.Writer, log *slog.Logger, record func(T) (event.Record, bool)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := range ch {
			r, ok := record(v)
			if !ok {
				continue
			}
			if err := w.Write(r); err != nil {
				log.Error("write event", "error", err)
			}
		}
	}()
	return done
}
