// Package apparmor loads podarmor's compiled AppArmor profiles into the kernel with
// apparmor_parser and checks through securityfs that they are there. It touches only
// profiles named podarmor-<id> (policies/compile/apparmor.ProfileName): a node's other
// profiles are never replaced or removed.
package apparmor

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Defaults of Config.
const (
	DefaultDir        = "/var/lib/podarmor/apparmor"
	DefaultSecurityFS = "/sys/kernel/security"
)

// Config configures a Loader.
type Config struct {
	// Parser is the apparmor_parser binary; found in PATH or /sbin, /usr/sbin when empty.
	Parser string
	// Dir is where profile texts are written before loading, one file per profile;
	// DefaultDir when empty.
	Dir string
	// SecurityFS is where securityfs is mounted; DefaultSecurityFS when empty.
	SecurityFS string
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.SecurityFS == "" {
		c.SecurityFS = DefaultSecurityFS
	}
	if c.Parser == "" {
		p, err := exec.LookPath("apparmor_parser")
		if err != nil {
			for _, dir := range []string{"/usr/sbin", "/sbin"} {
				if _, serr := os.Stat(filepath.Join(dir, "apparmor_parser")); serr == nil {
					p, err = filepath.Join(dir, "apparmor_parser"), nil
					break
				}
			}
		}
		if err != nil {
			return errors.New("apparmor: apparmor_parser not found (Debian's apparmor package has it)")
		}
		c.Parser = p
	}
	return nil
}

// Loader loads profiles.
type Loader struct {
	cfg Config
}

// New returns a Loader, or an error saying why AppArmor cannot be used on this kernel.
func New(cfg Config) (*Loader, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	l := &Loader{cfg: cfg}
	if err := l.available(); err != nil {
		return nil, err
	}
	return l, nil
}

// available checks that AppArmor is an active LSM with its securityfs interface.
func (l *Loader) available() error {
	lsms, err := os.ReadFile(filepath.Join(l.cfg.SecurityFS, "lsm"))
	if err != nil {
		return fmt.Errorf("apparmor: read the active LSMs: %w (is securityfs mounted at %s?)", err, l.cfg.SecurityFS)
	}
	active := false
	for _, m := range strings.Split(strings.TrimSpace(string(lsms)), ",") {
		active = active || m == "apparmor"
	}
	if !active {
		return fmt.Errorf("apparmor: not an active LSM on this kernel (active: %s)", strings.TrimSpace(string(lsms)))
	}
	if _, err := os.Stat(l.profilesFile()); err != nil {
		return fmt.Errorf("apparmor: %w", err)
	}
	return nil
}

func (l *Loader) profilesFile() string {
	return filepath.Join(l.cfg.SecurityFS, "apparmor", "profiles")
}

// Load writes the profile text to the loader's directory and loads it, replacing a
// loaded profile of the same name (apparmor_parser -r), then checks that the kernel
// lists it in enforce mode. name is the profile's name, which the text declares.
func (l *Loader) Load(ctx context.Context, name string, text []byte) error {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("apparmor: profile name %q is not a file name", name)
	}
	if err := os.MkdirAll(l.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("apparmor: %w", err)
	}
	file := filepath.Join(l.cfg.Dir, name)
	if err := writeAtomic(file, text); err != nil {
		return fmt.Errorf("apparmor: write profile %s: %w", name, err)
	}
	cmd := exec.CommandContext(ctx, l.cfg.Parser, "-r", "--quiet", file)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("apparmor: load profile %s with %s -r: %w: %s", name, l.cfg.Parser, err, strings.TrimSpace(out.String()))
	}
	loaded, err := l.Loaded()
	if err != nil {
		return err
	}
	switch mode, ok := loaded[name]; {
	case !ok:
		return fmt.Errorf("apparmor: %s -r %s succeeded, but %s does not list profile %s", l.cfg.Parser, file, l.profilesFile(), name)
	case mode != "enforce":
		return fmt.Errorf("apparmor: profile %s is loaded in %s mode, not enforce", name, mode)
	}
	return nil
}

// Current reports whether profile name is loaded in enforce mode from exactly text: the
// file Load wrote holds text and the kernel lists the profile. A restarted enforcer uses
// it to skip reloading what did not change.
func (l *Loader) Current(name string, text []byte) bool {
	old, err := os.ReadFile(filepath.Join(l.cfg.Dir, filepath.Base(name)))
	if err != nil || !bytes.Equal(old, text) {
		return false
	}
	loaded, err := l.Loaded()
	return err == nil && loaded[name] == "enforce"
}

// Remove unloads profile name (through securityfs's .remove) and deletes its file. A
// profile that is not loaded is no error. Processes confined by it become unconfined.
func (l *Loader) Remove(name string) error {
	if name == "" || name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("apparmor: profile name %q is not a file name", name)
	}
	loaded, err := l.Loaded()
	if err != nil {
		return err
	}
	if _, ok := loaded[name]; ok {
		f, err := os.OpenFile(filepath.Join(l.cfg.SecurityFS, "apparmor", ".remove"), os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("apparmor: remove profile %s: %w", name, err)
		}
		_, err = f.Write([]byte(name))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("apparmor: remove profile %s: %w", name, err)
		}
		if loaded, err = l.Loaded(); err != nil {
			return err
		}
		if _, ok := loaded[name]; ok {
			return fmt.Errorf("apparmor: profile %s is still listed in %s after its removal", name, l.profilesFile())
		}
	}
	if err := os.Remove(filepath.Join(l.cfg.Dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("apparmor: %w", err)
	}
	return nil
}

// Loaded returns the profiles the kernel has, by name, with their mode ("enforce",
// "complain", ...).
func (l *Loader) Loaded() (map[string]string, error) {
	data, err := os.ReadFile(l.profilesFile())
	if err != nil {
		return nil, fmt.Errorf("apparmor: list loaded profiles: %w", err)
	}
	return parseProfiles(data), nil
}

// parseProfiles parses securityfs's profiles file: "name (mode)" per line.
func parseProfiles(data []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		i := strings.LastIndex(line, " (")
		if i < 0 || !strings.HasSuffix(line, ")") {
			continue
		}
		out[line[:i]] = line[i+2 : len(line)-1]
	}
	return out
}

// writeAtomic writes data to file through a temporary file and a rename, so a reader
// never sees half a file.
func writeAtomic(file string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file)+"-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
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
	}
	return err
}
