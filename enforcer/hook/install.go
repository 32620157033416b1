package hook

import (
	"fmt"
	"os"
	"path/filepath"
)

// Install copies the executable src to dest, where the container runtime runs it as the
// OCI hook (the DaemonSet's install-hook init container puts the enforcer's own binary
// on the node this way; its image has no shell to copy with). The copy is written next
// to dest and renamed over it, so a runtime starting the hook meanwhile runs either the
// old binary or the new one, never a partial file, and a running old hook keeps its
// inode. An unchanged dest is left alone.
func Install(src, dest string) (changed bool, err error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("install hook: read %s: %w", src, err)
	}
	if old, err := os.ReadFile(dest); err == nil && string(old) == string(data) {
		return false, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".*")
	if err != nil {
		return false, fmt.Errorf("install hook: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("install hook: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return false, fmt.Errorf("install hook: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("install hook: sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("install hook: %w", err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return false, fmt.Errorf("install hook: %w", err)
	}
	return true, nil
}
