package nri

import (
	"strings"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/podarmor/podarmor/enforcer/hook"
)

func TestAdjust(t *testing.T) {
	tests := map[string]struct {
		hook    HookConfig
		profile string
		want    *api.ContainerAdjustment
		wantErr string
	}{
		"the defaults of the hook's flags are spelled out": {
			hook:    HookConfig{Path: "/opt/podarmor/bin/podarmor-enforcer"},
			profile: "ap.shop.web",
			want: &api.ContainerAdjustment{
				Annotations: map[string]string{"podarmor.io/profile": "ap.shop.web"},
				Hooks: &api.Hooks{
					CreateRuntime: []*api.Hook{{
						Path: "/opt/podarmor/bin/podarmor-enforcer",
						Args: []string{"podarmor-enforcer", "oci-hook", "--socket=/run/podarmor/enforcer.sock",
							"--timeout=10s", "--on-unavailable=refuse", "--unprotected-dir=/run/podarmor/unprotected"},
						Timeout: api.Int(15),
					}},
					Poststop: []*api.Hook{{
						Path: "/opt/podarmor/bin/podarmor-enforcer",
						Args: []string{"podarmor-enforcer", "oci-hook", "--socket=/run/podarmor/enforcer.sock",
							"--timeout=10s", "--on-unavailable=refuse", "--unprotected-dir=/run/podarmor/unprotected"},
						Timeout: api.Int(15),
					}},
				},
			},
		},
		"configured flags reach the hook, and its OCI timeout outlasts its own": {
			hook: HookConfig{Path: "/usr/local/bin/enforcer", Socket: "/var/run/pa.sock", Timeout: 2500 * time.Millisecond,
				OnUnavailable: "ALLOW", UnprotectedDir: "/var/run/pa-unprotected"},
			profile: "cap.baseline",
			want: &api.ContainerAdjustment{
				Annotations: map[string]string{"podarmor.io/profile": "cap.baseline"},
				Hooks: &api.Hooks{
					CreateRuntime: []*api.Hook{{
						Path: "/usr/local/bin/enforcer",
						Args: []string{"enforcer", "oci-hook", "--socket=/var/run/pa.sock",
							"--timeout=2.5s", "--on-unavailable=allow", "--unprotected-dir=/var/run/pa-unprotected"},
						Timeout: api.Int(8),
					}},
					Poststop: []*api.Hook{{
						Path: "/usr/local/bin/enforcer",
						Args: []string{"enforcer", "oci-hook", "--socket=/var/run/pa.sock",
							"--timeout=2.5s", "--on-unavailable=allow", "--unprotected-dir=/var/run/pa-unprotected"},
						Timeout: api.Int(8),
					}},
				},
			},
		},
		"a profile that is no label value is refused": {
			hook:    HookConfig{Path: "/opt/podarmor/bin/podarmor-enforcer"},
			profile: "ap/shop web",
			wantErr: `profile id "ap/shop web"`,
		},
		"a profile longer than a label value is refused": {
			hook:    HookConfig{Path: "/opt/podarmor/bin/podarmor-enforcer"},
			profile: strings.Repeat("p", 64),
			wantErr: "must be no more than 63",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if err := tc.hook.defaults(); err != nil {
				t.Fatal(err)
			}
			got, err := Adjust(tc.profile, tc.hook)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, got, protocmp.Transform()); d != "" {
				t.Errorf("adjustment (-want +got):\n%s", d)
			}
			// Both hooks must be their own values: NRI appends them to the runtime's
			// lists, and an aliased hook edited by one stage would change the other.
			if got.Hooks.CreateRuntime[0] == got.Hooks.Poststop[0] {
				t.Error("createRuntime and poststop share one *api.Hook")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := map[string]struct {
		cfg     Config
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		"only the hook path is required": {
			cfg: Config{Hook: HookConfig{Path: "/opt/podarmor/bin/podarmor-enforcer"}},
			check: func(t *testing.T, c Config) {
				if c.Socket != "/var/run/nri/nri.sock" || c.PluginName != "podarmor" || c.PluginIndex != "99" {
					t.Errorf("socket %q, name %q, index %q", c.Socket, c.PluginName, c.PluginIndex)
				}
				if c.Hook.Socket != hook.DefaultSocket || c.Hook.Timeout != hook.DefaultTimeout ||
					c.Hook.OnUnavailable != hook.Refuse || c.Hook.UnprotectedDir != hook.DefaultUnprotectedDir {
					t.Errorf("hook %+v", c.Hook)
				}
				if c.Select(Pod{Labels: map[string]string{"podarmor.io/profile": "ap.x.y"}}) != "ap.x.y" ||
					c.Select(Pod{Labels: map[string]string{"app": "web"}}) != "" {
					t.Error("the default selection is not the pod label podarmor.io/profile")
				}
			},
		},
		"no hook path": {
			cfg:     Config{},
			wantErr: "hook path: empty",
		},
		"a relative hook path": {
			cfg:     Config{Hook: HookConfig{Path: "podarmor-enforcer"}},
			wantErr: `hook path "podarmor-enforcer": not absolute`,
		},
		"an unknown on-unavailable": {
			cfg:     Config{Hook: HookConfig{Path: "/bin/x", OnUnavailable: "maybe"}},
			wantErr: `hook on-unavailable: "maybe"`,
		},
		"a three-digit index": {
			cfg:     Config{PluginIndex: "100", Hook: HookConfig{Path: "/bin/x"}},
			wantErr: "plugin index",
		},
		"a name with a slash": {
			cfg:     Config{PluginName: "pod/armor", Hook: HookConfig{Path: "/bin/x"}},
			wantErr: "plugin name",
		},
		"backoff bounds the wrong way round": {
			cfg:     Config{MinBackoff: time.Minute, MaxBackoff: time.Second, Hook: HookConfig{Path: "/bin/x"}},
			wantErr: "max backoff 1s is less than min backoff 1m0s",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := tc.cfg
			if err := c.defaults(); err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
