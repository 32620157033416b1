package seccomp

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStore(t *testing.T) {
	s := Store{Root: t.TempDir()}
	profile := []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}`)
	path, err := s.Write("ap.default.p", profile)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(s.Root, "podarmor", "ap.default.p.json"); path != want {
		t.Errorf("path %s, want %s", path, want)
	}
	p, err := s.Read("ap.default.p")
	if err != nil || p.DefaultAction != "SCMP_ACT_ALLOW" || len(p.Syscalls) != 1 {
		t.Errorf("read back %+v, %v", p, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("files left beside the profile: %v", entries)
	}
	if _, err := s.Write("x", []byte("not json")); err == nil {
		t.Error("wrote a profile that is not JSON")
	}
	if _, err := s.Write("../x", profile); err == nil {
		t.Error("wrote a profile id with a path")
	}
	if err := s.Remove("ap.default.p"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("ap.default.p"); err != nil {
		t.Errorf("removing a missing profile: %v", err)
	}
}
