package vm

import (
	"bufio"
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// initScript is the guest's /init.
//
//go:embed init.sh
var initScript []byte

// File is a file that Run puts into the guest's initramfs.
type File struct {
	// Path is where the file appears in the guest, absolute. Required.
	Path string
	// Source is the host file to copy. When it is empty, Data are the contents.
	Source string
	// Data are the contents of a file that has no Source.
	Data []byte
	// Mode holds the permission bits; zero means the Source's, or 0644 for Data.
	Mode fs.FileMode
}

// An entry is one record of an archive: a directory, a regular file or a symlink.
type entry struct {
	path   string // absolute, clean
	mode   cpio.FileMode
	data   []byte // file contents, or the target of a symlink
	source string // where data came from, for error messages
}

// archive collects the entries of one initramfs segment. Directories are added for every
// parent a file needs (the kernel's unpacker creates none), each once; a path added
// twice keeps the first entry.
type archive struct {
	entries []entry
	seen    map[string]bool
	// parent, if set, is the archive this one is unpacked over: paths it holds are
	// not repeated.
	parent *archive
}

func newArchive(parent *archive) *archive {
	return &archive{seen: map[string]bool{}, parent: parent}
}

func (a *archive) has(p string) bool {
	return a != nil && (a.seen[p] || a.parent.has(p))
}

func (a *archive) dir(p string) {
	p = path.Clean(p)
	if p == "/" || a.has(p) {
		return
	}
	a.dir(path.Dir(p))
	a.seen[p] = true
	a.entries = append(a.entries, entry{path: p, mode: cpio.TypeDir | 0o755})
}

// add records a regular file or a symlink (mode carries the type), replacing nothing:
// the first entry of a path wins within one archive.
func (a *archive) add(e entry) error {
	if !path.IsAbs(e.path) {
		return fmt.Errorf("guest path %q is not absolute", e.path)
	}
	e.path = path.Clean(e.path)
	if a.seen[e.path] {
		return nil
	}
	a.dir(path.Dir(e.path))
	a.seen[e.path] = true
	a.entries = append(a.entries, e)
	return nil
}

func (a *archive) symlink(p, target string) error {
	return a.add(entry{path: p, mode: cpio.TypeSymlink | 0o777, data: []byte(target)})
}

// file adds the host file source at guest path p, and the shared libraries it needs.
func (a *archive) file(p, source string, mode fs.FileMode) error {
	data, err := os.ReadFile(source)
	if err != nil {
		return fmt.Errorf("read %s for the guest's %s: %w", source, p, err)
	}
	if mode == 0 {
		info, err := os.Stat(source)
		if err != nil {
			return err
		}
		mode = info.Mode().Perm()
	}
	if err := a.add(entry{path: p, mode: cpio.TypeReg | cpio.FileMode(mode.Perm()), data: data, source: source}); err != nil {
		return err
	}
	return a.libraries(source, data)
}

// libraries adds the shared libraries and the program interpreter of a dynamically
// linked ELF executable (as ldd lists them) at the paths they have on the host, so that
// runc, apparmor_parser or a cgo test binary runs in the guest as it does here.
// Anything else adds nothing.
func (a *archive) libraries(source string, data []byte) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil // not ELF
	}
	defer f.Close()
	dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	if !dynamic {
		return nil
	}
	libs, err := ldd(source)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if a.has(lib) {
			continue
		}
		if err := a.file(lib, lib, 0); err != nil {
			return err
		}
	}
	return nil
}

// ldd returns the absolute paths of the libraries and interpreter that ldd lists for a
// dynamically linked executable.
func ldd(executable string) ([]string, error) {
	out, err := exec.Command("ldd", executable).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", executable, err)
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
		// "/lib64/ld-linux-x86-64.so.2 (0x...)" or "linux-vdso.so.1 (0x...)".
		line := strings.TrimSpace(sc.Text())
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: %s", executable, line)
		}
		if _, after, ok := strings.Cut(line, "=> "); ok {
			line = after
		}
		lib, _, _ := strings.Cut(line, " ")
		if path.IsAbs(lib) {
			libs = append(libs, lib)
		}
	}
	return libs, nil
}

// tree adds the host directory source (files, symlinks and directories below it) at
// guest path p.
func (a *archive) tree(p, source string) error {
	return filepath.WalkDir(source, func(host string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(source, host)
		if err != nil {
			return err
		}
		guest := path.Join(p, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			a.dir(guest)
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return err
			}
			return a.symlink(guest, target)
		case d.Type().IsRegular():
			return a.file(guest, host, 0)
		}
		return nil // sockets and devices are no part of a userland
	})
}

// addFiles adds caller-supplied files and directories.
func (a *archive) addFiles(files []File, dirs []string) error {
	for _, d := range dirs {
		if !path.IsAbs(d) {
			return fmt.Errorf("guest directory %q is not absolute", d)
		}
		a.dir(d)
	}
	for _, f := range files {
		var err error
		switch {
		case f.Source != "":
			err = a.file(f.Path, f.Source, f.Mode)
		default:
			mode := f.Mode.Perm()
			if mode == 0 {
				mode = 0o644
			}
			err = a.add(entry{path: f.Path, mode: cpio.TypeReg | cpio.FileMode(mode), data: f.Data})
		}
		if err != nil {
			return fmt.Errorf("guest file %s: %w", f.Path, err)
		}
	}
	return nil
}

// write writes the archive in the newc format the kernel unpacks.
func (a *archive) write(w io.Writer) error {
	cw := cpio.NewWriter(w)
	for _, e := range a.entries {
		hdr := &cpio.Header{
			Name: strings.TrimPrefix(e.path, "/"),
			Mode: e.mode,
			Size: int64(len(e.data)),
		}
		if e.mode&cpio.ModeType == cpio.TypeDir {
			hdr.Size = 0
		}
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("cpio header of %s: %w", e.path, err)
		}
		if hdr.Size > 0 {
			if _, err := cw.Write(e.data); err != nil {
				return fmt.Errorf("cpio contents of %s: %w", e.path, err)
			}
		}
	}
	return cw.Close()
}

// base returns the guest userland every VM starts from: busybox (static, every applet a
// symlink), runc, apparmor_parser, aa-exec and aa-status from the host's Debian packages
// with their libraries, apparmor_parser's configuration, abi, tunables and abstractions,
// a root user, the mount points, and /init.
func base() (*archive, error) {
	a := newArchive(nil)
	for _, d := range []string{"/proc", "/sys", "/dev", "/tmp", "/run", "/root", "/mnt", "/var/tmp", "/podarmor"} {
		a.dir(d)
	}
	if err := a.add(entry{path: "/init", mode: cpio.TypeReg | 0o755, data: initScript}); err != nil {
		return nil, err
	}

	busybox, err := hostTool("busybox")
	if err != nil {
		return nil, err
	}
	if err := requireStatic(busybox, "busybox-static"); err != nil {
		return nil, err
	}
	if err := a.file("/bin/busybox", busybox, 0o755); err != nil {
		return nil, err
	}
	applets, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	for applet := range strings.FieldsSeq(string(applets)) {
		if err := a.symlink("/"+applet, "/bin/busybox"); err != nil {
			return nil, err
		}
	}

	for _, tool := range []string{"runc", "apparmor_parser", "aa-exec", "aa-status"} {
		host, err := hostTool(tool)
		if err != nil {
			return nil, err
		}
		// Under the host's path: a merged-/usr host finds /sbin/x and /usr/sbin/x alike,
		// the guest has both on PATH.
		if err := a.file(host, host, 0o755); err != nil {
			return nil, err
		}
	}
	// parser.conf pins the policy features to the apparmor package's
	// (policy-features=/usr/share/apparmor-features/features), as on a Debian node.
	for _, d := range []string{"/etc/apparmor.d/abi", "/etc/apparmor.d/tunables", "/etc/apparmor.d/abstractions", "/usr/share/apparmor-features"} {
		if err := a.tree(d, d); err != nil {
			return nil, fmt.Errorf("apparmor_parser's includes: %w (is the apparmor package installed?)", err)
		}
	}
	if _, err := os.Stat("/etc/apparmor/parser.conf"); err == nil {
		if err := a.file("/etc/apparmor/parser.conf", "/etc/apparmor/parser.conf", 0o644); err != nil {
			return nil, err
		}
	}

	etc := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		"/etc/hosts":  "127.0.0.1 localhost podarmor-vm\n::1 localhost\n",
	}
	for _, p := range slices.Sorted(maps.Keys(etc)) {
		if err := a.add(entry{path: p, mode: cpio.TypeReg | 0o644, data: []byte(etc[p])}); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// ToolsMissing says which host programs the VM needs and are not installed, or returns
// nil when all are: qemu-system-x86_64, busybox, runc, apparmor_parser, aa-exec, aa-status
// and ldd (hack/deps.sh vm installs them).
func ToolsMissing() error {
	var errs []error
	for _, tool := range []string{"qemu-system-x86_64", "busybox", "runc", "apparmor_parser", "aa-exec", "aa-status", "ldd"} {
		if _, err := hostTool(tool); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// hostTool finds a program in PATH or in the sbin directories (which a non-root PATH
// lacks).
func hostTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is not installed (hack/deps.sh vm installs it)", name)
}

func requireStatic(file, pkg string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the guest needs the static one from Debian's %s", file, pkg)
		}
	}
	return nil
}

// writeInitramfs writes the initramfs of one boot to file: the base archive, then an
// archive of the extras (the kernel unpacks concatenated archives in turn; a later file
// replaces an earlier one). Both are uncompressed: the kernel decompressing a gzip
// initramfs under TCG costs about a second of every boot, far more than writing and
// loading the 15 MB more.
func writeInitramfs(file string, files []File, dirs []string) error {
	archives, err := initramfs(files, dirs)
	if err != nil {
		return err
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, a := range archives {
		if err == nil {
			err = a.write(w)
		}
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write initramfs %s: %w", file, err)
	}
	return nil
}

// initramfs returns the archives of an initramfs, in order: the base userland, then
// the extras.
func initramfs(files []File, dirs []string) ([]*archive, error) {
	base, err := base()
	if err != nil {
		return nil, err
	}
	extra := newArchive(base)
	if err := extra.addFiles(files, dirs); err != nil {
		return nil, err
	}
	return []*archive{base, extra}, nil
}
