package certs

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

func TestConfigDefaults(t *testing.T) {
	client := fake.NewClientset()
	tests := map[string]struct {
		cfg     Config
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		"secret mode fills names and durations": {
			cfg: Config{Client: client, Namespace: "ns", Identity: "a"},
			check: func(t *testing.T, c Config) {
				if c.SecretName != DefaultSecretName || c.ServiceName != DefaultServiceName ||
					c.MutatingWebhookConfigurationName != DefaultWebhookConfigurationName ||
					c.ValidatingWebhookConfigurationName != DefaultWebhookConfigurationName ||
					c.LeaseName != DefaultLeaseName {
					t.Errorf("names not defaulted: %+v", c)
				}
				if c.CAValidity != DefaultCAValidity || c.ServingValidity != DefaultServingValidity ||
					c.Overlap != DefaultOverlap || c.ResyncInterval != DefaultResyncInterval {
					t.Errorf("durations not defaulted: %+v", c)
				}
				if c.Now == nil || c.Logger == nil {
					t.Error("clock or logger not defaulted")
				}
			},
		},
		"the identity defaults to the host name": {
			cfg: Config{Client: client, Namespace: "ns"},
			check: func(t *testing.T, c Config) {
				if c.Identity == "" {
					t.Error("Identity empty")
				}
			},
		},
		"secret mode without a client is rejected": {
			cfg:     Config{Namespace: "ns"},
			wantErr: "no Client",
		},
		"secret mode without a namespace is rejected": {
			cfg:     Config{Client: client},
			wantErr: "no Namespace",
		},
		"file mode needs no client": {
			cfg: Config{CertFile: "tls.crt", KeyFile: "tls.key"},
			check: func(t *testing.T, c Config) {
				if c.FilePollInterval != DefaultFilePollInterval {
					t.Errorf("FilePollInterval = %s", c.FilePollInterval)
				}
			},
		},
		"file mode with only a certificate file is rejected": {
			cfg:     Config{CertFile: "tls.crt"},
			wantErr: "both CertFile and KeyFile",
		},
		"an overlap of a third of the serving validity is rejected": {
			cfg:     Config{Client: client, Namespace: "ns", Identity: "a", ServingValidity: 3 * time.Hour, Overlap: time.Hour},
			wantErr: "overlap",
		},
		"a lease duration shorter than the renew deadline is rejected": {
			cfg:     Config{Client: client, Namespace: "ns", Identity: "a", LeaseDuration: time.Second},
			wantErr: "lease duration",
		},
		"a negative validity is rejected": {
			cfg:     Config{Client: client, Namespace: "ns", Identity: "a", CAValidity: -time.Hour},
			wantErr: "negative CAValidity",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.defaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("defaults() = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("defaults(): %v", err)
			}
			tc.check(t, cfg)
		})
	}
}

func TestServingIdentity(t *testing.T) {
	cfg := Config{
		Namespace:   "podarmor-system",
		ServiceName: "podarmor-webhook",
		DNSNames:    []string{"localhost", "podarmor-webhook"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.IPv4(127, 0, 0, 1)},
	}
	id := cfg.identity()
	wantNames := []string{
		"localhost",
		"podarmor-webhook",
		"podarmor-webhook.podarmor-system",
		"podarmor-webhook.podarmor-system.svc",
		"podarmor-webhook.podarmor-system.svc.cluster.local",
	}
	if !slices.Equal(id.dnsNames, wantNames) {
		t.Errorf("DNS names = %q, want %q", id.dnsNames, wantNames)
	}
	if len(id.ips) != 2 {
		t.Errorf("IPs = %v, want 127.0.0.1 and ::1 once each", id.ips)
	}
	if id.commonName != "podarmor-webhook.podarmor-system.svc" {
		t.Errorf("common name = %q", id.commonName)
	}
}
