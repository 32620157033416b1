package images

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// libraryDirs are where the dynamic loader of a Debian amd64 system looks for a library
// that no /etc/ld.so.cache lists (an image has none): the multiarch directories first.
// Unpacked packages hold them under /usr only (the /lib symlinks come from the usrmerge
// of a real system), so each is also looked up with /usr in front.
var libraryDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64",
	"/lib", "/usr/lib",
}

// library is a shared object an executable needs: where it goes in the image, and where
// its content is on this machine.
type library struct {
	imagePath, hostPath string
}

// sharedLibraries lists what the ELF executable exe (a path inside root) needs to run,
// what `ldd` would list for it on a system whose root is root: its program interpreter
// at exactly the path the executable names, and every DT_NEEDED library, transitively,
// at the path of the system directory where it was found. Sorted by image path.
func sharedLibraries(root, exe string) ([]library, error) {
	found := map[string]library{} // by image path
	done := map[string]bool{}     // host paths read
	queue := []string{exe}
	for len(queue) > 0 {
		inside := queue[0]
		queue = queue[1:]
		host, err := regularIn(root, inside)
		if err != nil {
			return nil, err
		}
		if done[host] {
			continue
		}
		done[host] = true
		interp, needed, err := dynamic(host)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", inside, err)
		}
		if interp != "" {
			host, err := lookup(root, interp)
			if err != nil {
				return nil, fmt.Errorf("%s: program interpreter %s: %w", inside, interp, err)
			}
			found[interp] = library{imagePath: interp, hostPath: host}
		}
		for _, name := range needed {
			lib, err := findLibrary(root, name)
			if err != nil {
				return nil, fmt.Errorf("%s needs %s: %w", inside, name, err)
			}
			if _, ok := found[lib.imagePath]; !ok {
				found[lib.imagePath] = lib
				queue = append(queue, lib.imagePath)
			}
		}
	}
	libs := make([]library, 0, len(found))
	for _, l := range found {
		libs = append(libs, l)
	}
	slices.SortFunc(libs, func(a, b library) int { return strings.Compare(a.imagePath, b.imagePath) })
	return libs, nil
}

// dynamic reads an ELF file's program interpreter and DT_NEEDED entries. A library that
// names a search path of its own (DT_RPATH, DT_RUNPATH) is refused rather than resolved
// wrongly.
func dynamic(file string) (interp string, needed []string, err error) {
	f, err := elf.Open(file)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", nil, fmt.Errorf("read PT_INTERP: %w", err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if f.Section(".dynamic") == nil {
		return interp, nil, nil // static
	}
	for _, tag := range []elf.DynTag{elf.DT_RPATH, elf.DT_RUNPATH} {
		if v, _ := f.DynString(tag); len(v) > 0 {
			return "", nil, fmt.Errorf("has %s %q, which the image builder does not follow", tag, v)
		}
	}
	needed, err = f.DynString(elf.DT_NEEDED)
	if err != nil {
		return "", nil, fmt.Errorf("read DT_NEEDED: %w", err)
	}
	return interp, needed, nil
}

// findLibrary looks a library's file name up in libraryDirs inside root.
func findLibrary(root, name string) (library, error) {
	if strings.Contains(name, "/") {
		return library{}, fmt.Errorf("a needed library with a path (%q) is not supported", name)
	}
	for _, dir := range libraryDirs {
		p := path.Join(dir, name)
		host, err := regularIn(root, p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return library{}, err
		}
		return library{imagePath: p, hostPath: host}, nil
	}
	return library{}, fmt.Errorf("in none of %s under %s: %w", strings.Join(libraryDirs, ", "), root, fs.ErrNotExist)
}

// lookup resolves an absolute path inside root, or the same path under /usr where an
// unpacked package holds what a merged-/usr system reaches through /lib64 or /lib.
func lookup(root, p string) (string, error) {
	host, err := regularIn(root, p)
	if errors.Is(err, fs.ErrNotExist) && !strings.HasPrefix(p, "/usr/") {
		host, err = regularIn(root, "/usr"+p)
	}
	return host, err
}

// resolveIn returns the host path of what the absolute path p names inside root,
// following symbolic links as if root were "/": an absolute link target starts again at
// root, and ".." never leaves it.
func resolveIn(root, p string) (string, error) {
	const maxLinks = 40
	rest := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	var cur []string // resolved components, none of them a link
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		host := filepath.Join(root, filepath.Join(cur...), c)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", fmt.Errorf("%s inside %s: %w", p, root, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = append(cur, c)
			continue
		}
		if links++; links > maxLinks {
			return "", fmt.Errorf("%s inside %s: more than %d symbolic links", p, root, maxLinks)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = nil
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, filepath.Join(cur...)), nil
}

// regularIn is resolveIn for a path that must name a regular file.
func regularIn(root, p string) (string, error) {
	host, err := resolveIn(root, p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(host)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s inside %s: not a regular file", p, root)
	}
	return host, nil
}
