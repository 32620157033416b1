package framework

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// NewSetup needs no binaries, so its output is checked here without starting anything.
func TestNewSetup(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSetup(SetupConfig{Dir: dir, BinDir: "/bin/dir", Version: "v1.29.15", APIServerFlags: []string{"--v=4"}})
	if err != nil {
		t.Fatal(err)
	}

	for _, flag := range []string{
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--bind-address=127.0.0.1",
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "pki", "sa.key"),
	} {
		if !slices.Contains(s.APIServer, flag) {
			t.Errorf("kube-apiserver lacks %s: %q", flag, s.APIServer)
		}
	}
	if s.APIServer[0] != "/bin/dir/kube-apiserver" || s.Etcd[0] != "/bin/dir/etcd" {
		t.Errorf("binaries: got %s and %s, want them in /bin/dir", s.APIServer[0], s.Etcd[0])
	}
	if last := s.APIServer[len(s.APIServer)-1]; last != "--v=4" {
		t.Errorf("extra flags must come last to override the defaults; last is %s", last)
	}
	for _, argv := range [][]string{s.Etcd, s.APIServer} {
		for _, a := range argv {
			if strings.Contains(a, "://") && !strings.Contains(a, "://127.0.0.1:") && !strings.Contains(a, "kubernetes.default.svc") {
				t.Errorf("%s listens or connects beyond loopback: %s", filepath.Base(argv[0]), a)
			}
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "etcd")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("etcd's data directory must exist with mode 0700 (etcd refuses others): %v %v", fi, err)
	}

	// The service-account key is RSA and matches its public half.
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "sa.key"))
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "sa.pub"))
	kb, _ := pem.Decode(keyPEM)
	pb, _ := pem.Decode(pubPEM)
	if kb == nil || pb == nil {
		t.Fatal("sa.key or sa.pub is not PEM")
	}
	key, err := x509.ParsePKCS1PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.ParsePKIXPublicKey(pb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !key.PublicKey.Equal(pub) {
		t.Error("sa.pub is not the public half of sa.key")
	}

	// The kubeconfig reaches the same server as Config, as the admin.
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != s.Config.Host || cfg.BearerToken != s.Config.BearerToken || cfg.Host != s.APIServerURL {
		t.Errorf("kubeconfig: host %s token %t; want %s and Config's token", cfg.Host, cfg.BearerToken == s.Config.BearerToken, s.APIServerURL)
	}
	tokens, _ := os.ReadFile(filepath.Join(dir, "tokens.csv"))
	if want := s.Config.BearerToken + "," + AdminUser + ","; !strings.HasPrefix(string(tokens), want) || !strings.Contains(string(tokens), "system:masters") {
		t.Errorf("tokens.csv: %q", tokens)
	}
}

func TestVersionsFromEnv(t *testing.T) {
	tests := map[string]struct {
		env     string
		want    []string
		wantErr bool
	}{
		"unset gives the defaults":                  {env: "", want: DefaultVersions},
		"one version":                               {env: "v1.29.15", want: []string{"v1.29.15"}},
		"a list, with spaces and a duplicate":       {env: " v1.37.2, v1.29.15,v1.37.2 ", want: []string{"v1.37.2", "v1.29.15"}},
		"a version without its v is an error":       {env: "1.29.15", wantErr: true},
		"a version without its patch is an error":   {env: "v1.29", wantErr: true},
		"a pre-release is not a release, and fails": {env: "v1.36.0-rc.1", wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Setenv(VersionsEnv, tc.env)
			got, err := versionsFromEnv()
			if (err != nil) != tc.wantErr {
				t.Fatalf("error: %v, want error %t", err, tc.wantErr)
			}
			if !tc.wantErr && !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
