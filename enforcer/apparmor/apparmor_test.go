package apparmor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseProfiles(t *testing.T) {
	got := parseProfiles([]byte("podarmor-ap.default.p (enforce)\n/usr/bin/man (complain)\nweird name (x) (kill)\n\n"))
	want := map[string]string{"podarmor-ap.default.p": "enforce", "/usr/bin/man": "complain", "weird name (x)": "kill"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
}

// fakeSecurityFS makes a securityfs tree and a parser script that "loads" a profile by
// appending its name to the profiles file, as the kernel would list it.
func fakeSecurityFS(t *testing.T, lsm string, parser string) Config {
	t.Helper()
	dir := t.TempDir()
	sfs := filepath.Join(dir, "security")
	if err := os.MkdirAll(filepath.Join(sfs, "apparmor"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(sfs, "lsm"), []byte(lsm), 0o644)
	os.WriteFile(filepath.Join(sfs, "apparmor", "profiles"), nil, 0o644)
	script := filepath.Join(dir, "apparmor_parser")
	os.WriteFile(script, []byte("#!/bin/sh\nPROFILES="+filepath.Join(sfs, "apparmor", "profiles")+"\n"+parser), 0o755)
	return Config{Parser: script, Dir: filepath.Join(dir, "profiles"), SecurityFS: sfs}
}

func TestLoad(t *testing.T) {
	tests := map[string]struct {
		lsm, parser string
		newErr      string
		loadErr     string
	}{
		"a profile the parser loads is checked in securityfs": {
			lsm:    "lockdown,capability,apparmor,bpf",
			parser: `for f; do :; done; echo "$(basename "$f") (enforce)" >>"$PROFILES"`,
		},
		"a parser that fails is reported with its output": {
			lsm:     "apparmor,bpf",
			parser:  `echo "AppArmor parser error at line 3: syntax error" >&2; exit 1`,
			loadErr: "syntax error",
		},
		"a profile missing from securityfs after loading is an error": {
			lsm:     "apparmor",
			parser:  `exit 0`,
			loadErr: "does not list profile podarmor-p",
		},
		"a profile in complain mode is an error": {
			lsm:     "apparmor",
			parser:  `for f; do :; done; echo "$(basename "$f") (complain)" >>"$PROFILES"`,
			loadErr: "complain mode",
		},
		"a kernel without AppArmor is refused at once": {
			lsm:    "lockdown,capability,landlock,bpf",
			newErr: "not an active LSM",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l, err := New(fakeSecurityFS(t, tc.lsm, tc.parser))
			if tc.newErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.newErr) {
					t.Fatalf("New: %v, want %q", err, tc.newErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = l.Load(context.Background(), "podarmor-p", []byte("profile podarmor-p {}\n"))
			if tc.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.loadErr) {
					t.Fatalf("Load: %v, want %q", err, tc.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if data, err := os.ReadFile(filepath.Join(l.cfg.Dir, "podarmor-p")); err != nil || string(data) != "profile podarmor-p {}\n" {
				t.Errorf("profile file: %q, %v", data, err)
			}
		})
	}
	t.Run("a name with a path is refused", func(t *testing.T) {
		l, err := New(fakeSecurityFS(t, "apparmor", "exit 0"))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Load(context.Background(), "../x", nil); err == nil {
			t.Error("loaded ../x")
		}
	})
}
