package hook

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	dest := filepath.Join(dir, "bin", "podarmor-enforcer")
	if err := os.Mkdir(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(data string) {
		if err := os.WriteFile(src, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(wantChanged, changed bool, want string) {
		t.Helper()
		if changed != wantChanged {
			t.Errorf("changed %v, want %v", changed, wantChanged)
		}
		got, err := os.ReadFile(dest)
		if err != nil || string(got) != want {
			t.Errorf("dest holds %q (%v), want %q", got, err, want)
		}
		fi, err := os.Stat(dest)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("dest mode %v (%v), want 0755", fi.Mode(), err)
		}
		entries, _ := os.ReadDir(filepath.Dir(dest))
		if len(entries) != 1 {
			t.Errorf("the directory holds %d entries, want the binary alone (no temporary file left)", len(entries))
		}
	}

	write("v1")
	changed, err := Install(src, dest)
	if err != nil {
		t.Fatal(err)
	}
	check(true, changed, "v1")

	changed, err = Install(src, dest)
	if err != nil {
		t.Fatal(err)
	}
	check(false, changed, "v1")

	// A hook running the old binary keeps it: the new one is a new file.
	old, err := os.Open(dest)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	write("v2, longer")
	if changed, err = Install(src, dest); err != nil {
		t.Fatal(err)
	}
	check(true, changed, "v2, longer")
	buf := make([]byte, 16)
	n, _ := old.Read(buf)
	if string(buf[:n]) != "v1" {
		t.Errorf("the old binary's open file reads %q, want v1", buf[:n])
	}

	if _, err := Install(filepath.Join(dir, "missing"), dest); err == nil {
		t.Error("installing a missing source succeeded")
	}
	if _, err := Install(src, filepath.Join(dir, "no-such-dir", "x")); err == nil {
		t.Error("installing into a missing directory succeeded")
	}
}
