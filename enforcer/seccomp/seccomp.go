// Package seccomp writes podarmor's compiled seccomp profiles where the container
// runtime finds them: <root>/podarmor/<id>.json under the kubelet's seccomp root, the
// localhostProfile that pods name (policies/compile/seccomp.FileName). Files are
// replaced atomically, so a runtime reading one while it changes sees the old or the new
// profile, never a mix; files podarmor does not own are never touched.
package seccomp

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/compile/seccomp"
)

// DefaultRoot is the kubelet's default seccomp root.
const DefaultRoot = "/var/lib/kubelet/seccomp"

// Store writes profiles under Root (DefaultRoot when empty).
type Store struct {
	Root string
}

func (s Store) root() string {
	if s.Root == "" {
		return DefaultRoot
	}
	return s.Root
}

// Path is the file of profile id.
func (s Store) Path(id string) string {
	return filepath.Join(s.root(), filepath.FromSlash(seccomp.FileName(id)))
}

// Write checks that content is a seccomp profile and writes it as profile id's file,
// returning its path.
func (s Store) Write(id string, content []byte) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("seccomp: profile id %q is not a file name", id)
	}
	var check specs.LinuxSeccomp
	if err := json.Unmarshal(content, &check); err != nil {
		return "", fmt.Errorf("seccomp: profile %s is not a LinuxSeccomp: %w", id, err)
	}
	file := s.Path(id)
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", fmt.Errorf("seccomp: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+id+"-*")
	if err != nil {
		return "", fmt.Errorf("seccomp: %w", err)
	}
	_, err = tmp.Write(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("seccomp: write profile %s: %w", id, err)
	}
	return file, nil
}

// Read returns profile id as the runtime would load it.
func (s Store) Read(id string) (*specs.LinuxSeccomp, error) {
	data, err := os.ReadFile(s.Path(id))
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("seccomp: profile %s: %w", id, err)
	}
	return &p, nil
}

// Remove deletes profile id's file; a missing file is no error.
func (s Store) Remove(id string) error {
	err := os.Remove(s.Path(id))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}

// List returns the IDs of the profiles the store holds.
func (s Store) List() ([]string, error) {
	dir := filepath.Dir(s.Path("x"))
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if ok && e.Type().IsRegular() && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
