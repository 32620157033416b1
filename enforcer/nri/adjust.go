package nri

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/nri/pkg/api"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podarmor/podarmor/enforcer/hook"
)

// LabelProfile is the pod label the webhook sets on every sandboxed pod: its value is the
// pod's profile id.
const LabelProfile = "podarmor.io/profile"

// Pod is what the selection sees of a pod: the runtime's copy of the pod's metadata.
type Pod struct {
	Namespace   string
	Name        string
	UID         string
	Labels      map[string]string
	Annotations map[string]string
}

// SelectFunc returns the profile id of a pod's containers, or "" when the pod is not
// sandboxed and its containers must be left alone.
type SelectFunc func(Pod) string

// SelectByLabel is the default selection: the pod's podarmor.io/profile label.
func SelectByLabel(p Pod) string { return p.Labels[LabelProfile] }

// HookConfig is how the injected OCI hook is run.
type HookConfig struct {
	// Path is the podarmor-enforcer binary as the runtime sees it: a path in the node's
	// filesystem, not in the enforcer's container. Required.
	Path string
	// Socket is the enforcer's hook socket (the hook's --socket), as the node sees it;
	// hook.DefaultSocket when empty.
	Socket string
	// Timeout is the hook's --timeout; hook.DefaultTimeout when zero.
	Timeout time.Duration
	// OnUnavailable is the hook's --on-unavailable; hook.Refuse when empty.
	OnUnavailable hook.OnUnavailable
	// UnprotectedDir is the hook's --unprotected-dir; hook.DefaultUnprotectedDir when
	// empty.
	UnprotectedDir string
}

// hookTimeoutMargin is what the OCI timeout of the injected hooks adds to the hook's own
// timeout: the runtime kills a hook that outlives its OCI timeout, and the hook must get
// to say why it gave up (its error names the enforcer's socket) before that happens.
const hookTimeoutMargin = 5 * time.Second

func (c *HookConfig) defaults() error {
	if c.Path == "" {
		return fmt.Errorf("hook path: empty: name the podarmor-enforcer binary as the node sees it")
	}
	if !filepath.IsAbs(c.Path) {
		return fmt.Errorf("hook path %q: not absolute: the runtime runs it without a search path", c.Path)
	}
	if c.Socket == "" {
		c.Socket = hook.DefaultSocket
	}
	if c.Timeout == 0 {
		c.Timeout = hook.DefaultTimeout
	}
	if c.Timeout < 0 {
		return fmt.Errorf("hook timeout %v: negative", c.Timeout)
	}
	if c.OnUnavailable == "" {
		c.OnUnavailable = hook.Refuse
	}
	on, err := hook.ParseOnUnavailable(string(c.OnUnavailable))
	if err != nil {
		return fmt.Errorf("hook on-unavailable: %w", err)
	}
	c.OnUnavailable = on
	if c.UnprotectedDir == "" {
		c.UnprotectedDir = hook.DefaultUnprotectedDir
	}
	return nil
}

// Hook returns the OCI hook that registers (createRuntime) and unregisters (poststop) a
// container: the same command for both, since `podarmor-enforcer oci-hook` tells them
// apart by the status in the container state the runtime writes to its stdin. c must
// have its defaults filled (New does that).
func (c HookConfig) Hook() *api.Hook {
	seconds := int(math.Ceil((c.Timeout + hookTimeoutMargin).Seconds()))
	return &api.Hook{
		Path: c.Path,
		Args: []string{
			filepath.Base(c.Path), "oci-hook",
			"--socket=" + c.Socket,
			"--timeout=" + c.Timeout.String(),
			"--on-unavailable=" + string(c.OnUnavailable),
			"--unprotected-dir=" + c.UnprotectedDir,
		},
		Timeout: api.Int(seconds),
	}
}

// Adjust is what the plugin asks of the runtime for a new container of a pod with the
// given profile (non-empty): the hook at createRuntime and at poststop, and the
// container annotation podarmor.io/profile, so that the hook's request names the
// profile.
//
// The annotation replaces one the container may already carry (from its pod's
// annotations or the CRI config): the pod's label, which the webhook sets, is the
// authority. Were an earlier NRI plugin to set the same annotation, NRI would report
// a conflict and the container would not be created, which fails closed.
func Adjust(profile string, c HookConfig) (*api.ContainerAdjustment, error) {
	if err := checkProfile(profile); err != nil {
		return nil, err
	}
	a := &api.ContainerAdjustment{}
	a.AddHooks(&api.Hooks{
		CreateRuntime: []*api.Hook{c.Hook()},
		Poststop:      []*api.Hook{c.Hook()},
	})
	a.AddAnnotation(hook.AnnotationProfile, profile)
	return a, nil
}

// checkProfile refuses a profile id that cannot be the webhook's label value. The API
// server validates labels, so this catches a selection function that returns garbage;
// the container is then refused rather than started without its hook.
func checkProfile(profile string) error {
	if profile == "" {
		return fmt.Errorf("empty profile id")
	}
	if errs := validation.IsValidLabelValue(profile); len(errs) > 0 {
		return fmt.Errorf("profile id %q: %s", profile, strings.Join(errs, "; "))
	}
	return nil
}
