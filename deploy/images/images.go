// Package images defines podarmor's container images and builds them as OCI image
// archives, without a Docker engine or a registry: `hack/images.sh` builds the four images
// the local cluster imports into containerd (`ctr -n k8s.io images import`).
//
// Each image is declared in <name>/image.yaml next to this file (the Definition type says
// what a manifest may hold). A definition names its files by where they come from: an
// input, which the caller maps to a file or directory on the build machine (the static
// binaries, the unpacked Debian packages). An image is one layer built from its
// definition alone, with every time stamp fixed and every entry sorted, so its digest
// depends only on what it holds (docs/images.md).
package images

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Manifests holds the image definitions, one <name>/image.yaml each.
//
//go:embed */image.yaml
var Manifests embed.FS

// Repository is the name every image is given, before "/NAME:TAG": the local cluster has
// no registry, and the chart's default registry is this one.
const Repository = "localhost/podarmor"

// Definition is one image: how it runs and what it holds.
type Definition struct {
	// Name names the image (Repository/Name:Tag) and its archive (Name.tar).
	Name string `json:"name"`
	// Tag is a fixed tag; empty means the build's tag (the chart's appVersion).
	Tag string `json:"tag,omitempty"`
	// Entrypoint and Cmd are the process the container runs, as in the OCI image config.
	Entrypoint []string `json:"entrypoint"`
	Cmd        []string `json:"cmd,omitempty"`
	// User is "UID:GID", numeric, so that the kubelet can tell a non-root user.
	User string `json:"user"`
	// Env holds "NAME=value" entries.
	Env []string `json:"env,omitempty"`
	// Ports are the ports the process listens on, "PORT/tcp".
	Ports []string `json:"ports,omitempty"`
	// Files are copied into the image.
	Files []File `json:"files"`
	// Dirs are empty directories to create.
	Dirs []Dir `json:"dirs,omitempty"`
	// Links are symbolic links to create.
	Links []Link `json:"links,omitempty"`
}

// File is a file, or a directory with everything in it, copied into the image.
type File struct {
	// Path is where it goes in the image: absolute and clean.
	Path string `json:"path"`
	// From is where it comes from: "INPUT" (the input is the file or directory itself)
	// or "INPUT:/PATH" (a path inside the input, a directory such as an unpacked package).
	From string `json:"from"`
	// Mode is the file's permission bits, in octal ("0755"); empty keeps the source's.
	// A directory's entries always keep their own.
	Mode string `json:"mode,omitempty"`
	// Libraries adds the shared libraries that this ELF executable needs, and those they
	// need, from the same input: the dynamic loader at the path the executable names, each
	// library in the system directory where it was found (what ldd would list).
	Libraries bool `json:"libraries,omitempty"`
}

// Dir is an empty directory.
type Dir struct {
	Path string `json:"path"`
	// Mode is the permission bits in octal, "0755" when empty; "1777" for /tmp.
	Mode string `json:"mode,omitempty"`
}

// Link is a symbolic link at Path pointing to Target (relative to Path's directory, or
// absolute).
type Link struct {
	Path   string `json:"path"`
	Target string `json:"target"`
}

// Load reads and checks every definition in fsys (Manifests, or a test's own), sorted by
// name.
func Load(fsys fs.FS) ([]Definition, error) {
	files, err := fs.Glob(fsys, "*/image.yaml")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("images: no */image.yaml")
	}
	defs := make([]Definition, 0, len(files))
	for _, f := range files {
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		d, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if dir := path.Dir(f); d.Name != dir {
			return nil, fmt.Errorf("%s: name %q is not its directory's name %q", f, d.Name, dir)
		}
		defs = append(defs, d)
	}
	slices.SortFunc(defs, func(a, b Definition) int { return strings.Compare(a.Name, b.Name) })
	return defs, nil
}

// Parse reads one definition and checks it. Unknown fields are errors.
func Parse(data []byte) (Definition, error) {
	var d Definition
	if err := yaml.UnmarshalStrict(data, &d); err != nil {
		return d, err
	}
	return d, d.Check()
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)
	// A tag as the OCI distribution spec allows it.
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	userRE = regexp.MustCompile(`^[0-9]+:[0-9]+$`)
	portRE = regexp.MustCompile(`^[0-9]{1,5}/(tcp|udp)$`)
	// An input's name: what comes before the colon of From.
	inputRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
)

// Check reports the first thing wrong with the definition, naming it.
func (d Definition) Check() error {
	switch {
	case !nameRE.MatchString(d.Name):
		return fmt.Errorf("name %q: want lower-case letters, digits and single dashes", d.Name)
	case d.Tag != "" && !tagRE.MatchString(d.Tag):
		return fmt.Errorf("image %s: tag %q is not a valid tag", d.Name, d.Tag)
	case len(d.Entrypoint) == 0 || !path.IsAbs(d.Entrypoint[0]):
		return fmt.Errorf("image %s: entrypoint %q: want an absolute path first", d.Name, d.Entrypoint)
	case !userRE.MatchString(d.User):
		return fmt.Errorf("image %s: user %q: want numeric UID:GID", d.Name, d.User)
	case len(d.Files) == 0:
		return fmt.Errorf("image %s: no files", d.Name)
	}
	for _, e := range d.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("image %s: env %q: want NAME=value", d.Name, e)
		}
	}
	for _, p := range d.Ports {
		if !portRE.MatchString(p) {
			return fmt.Errorf("image %s: port %q: want PORT/tcp or PORT/udp", d.Name, p)
		}
	}
	seen := map[string]bool{}
	claim := func(p string) error {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return fmt.Errorf("image %s: path %q: want an absolute, clean path below /", d.Name, p)
		}
		if seen[p] {
			return fmt.Errorf("image %s: path %s is declared twice", d.Name, p)
		}
		seen[p] = true
		return nil
	}
	for _, f := range d.Files {
		if err := claim(f.Path); err != nil {
			return err
		}
		if _, _, err := f.source(); err != nil {
			return fmt.Errorf("image %s: file %s: %w", d.Name, f.Path, err)
		}
		if _, err := parseMode(f.Mode, 0); err != nil {
			return fmt.Errorf("image %s: file %s: %w", d.Name, f.Path, err)
		}
	}
	for _, dir := range d.Dirs {
		if err := claim(dir.Path); err != nil {
			return err
		}
		if _, err := parseMode(dir.Mode, 0o755); err != nil {
			return fmt.Errorf("image %s: dir %s: %w", d.Name, dir.Path, err)
		}
	}
	for _, l := range d.Links {
		if err := claim(l.Path); err != nil {
			return err
		}
		if l.Target == "" {
			return fmt.Errorf("image %s: link %s: empty target", d.Name, l.Path)
		}
	}
	return nil
}

// Ref is the image's full name with tag, given the build's tag.
func (d Definition) Ref(tag string) string {
	if d.Tag != "" {
		tag = d.Tag
	}
	return Repository + "/" + d.Name + ":" + tag
}

// source splits From into the input's name and the path inside it ("" for the input
// itself).
func (f File) source() (input, inside string, err error) {
	input, inside, _ = strings.Cut(f.From, ":")
	if !inputRE.MatchString(input) {
		return "", "", fmt.Errorf("from %q: want INPUT or INPUT:/PATH, INPUT in lower case", f.From)
	}
	if strings.Contains(f.From, ":") && (!path.IsAbs(inside) || path.Clean(inside) != inside) {
		return "", "", fmt.Errorf("from %q: the path inside the input must be absolute and clean", f.From)
	}
	return input, inside, nil
}

// parseMode reads octal permission bits (with setuid, setgid and sticky); empty gives def.
func parseMode(s string, def fs.FileMode) (fs.FileMode, error) {
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, fmt.Errorf("mode %q: want octal permission bits such as 0755", s)
	}
	m := fs.FileMode(v & 0o777)
	if v&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if v&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if v&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m, nil
}
