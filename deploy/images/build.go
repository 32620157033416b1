package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
)

// epoch is the time stamp of every file, layer and config: a fixed one, so that a build
// depends only on content.
var epoch = time.Unix(0, 0).UTC()

// Annotations of the archive's index.json that name the image. containerd's import takes
// the name from AnnotationImageName; the OCI layout's own ref name carries the tag.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// platform is the only platform built: the node VM's.
var platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Config is what a build needs besides the definition.
type Config struct {
	// Tag is the tag of images without a fixed one: the chart's appVersion. Required.
	Tag string
	// Inputs maps each input a definition names to a file or directory on this machine.
	Inputs map[string]string
}

// compressLayer compresses a layer's tar with zstd, in one frame, on one goroutine, so
// that the same tar always gives the same bytes. zstd rather than gzip because the
// image is unpacked where the CPU is scarce: in the local cluster's emulated node,
// containerd 1.7 decompressed the webhook's 63 MB layer in about 30 s from gzip (Go's
// compress/gzip) and in 3-6 s from zstd (docs/images.md). containerd 1.5 and later and
// CRI-O read zstd layers.
func compressLayer(layerTar []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(layerTar, nil), nil
}

// Build builds the image a definition describes: one layer with its files, and a config
// that says how it runs. Every input it names must be in cfg.Inputs.
func Build(d Definition, cfg Config) (v1.Image, error) {
	if err := d.Check(); err != nil {
		return nil, err
	}
	if cfg.Tag == "" || !tagRE.MatchString(cfg.Tag) {
		return nil, fmt.Errorf("image %s: tag %q is not a valid tag", d.Name, cfg.Tag)
	}
	t := tree{}
	if err := t.addDefinition(d, cfg.Inputs); err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Name, err)
	}
	var buf bytes.Buffer
	if err := t.write(&buf); err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", d.Name, err)
	}
	layerZstd, err := compressLayer(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", d.Name, err)
	}
	// The opener gives compressed bytes, which the layer takes as they are.
	layer, err := tarball.LayerFromOpener(
		func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerZstd)), nil },
		tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		return nil, fmt.Errorf("image %s: layer: %w", d.Name, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Name, err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)

	base, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Name, err)
	}
	cf := base.DeepCopy()
	cf.OS, cf.Architecture = platform.OS, platform.Architecture
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		Entrypoint: d.Entrypoint,
		Cmd:        d.Cmd,
		User:       d.User,
		Env:        d.Env,
		WorkingDir: "/",
		Labels: map[string]string{
			"org.opencontainers.image.title":   d.Name,
			"org.opencontainers.image.version": tagOf(d, cfg.Tag),
		},
	}
	if len(d.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range d.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	cf.History = []v1.History{{
		Created:   v1.Time{Time: epoch},
		CreatedBy: "podarmor image builder: deploy/images/" + d.Name + "/image.yaml",
	}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", d.Name, err)
	}
	return img, nil
}

func tagOf(d Definition, tag string) string {
	if d.Tag != "" {
		return d.Tag
	}
	return tag
}

// WriteArchive writes img as an OCI image layout in a tar archive, the form that
// `ctr images import` reads, with the image named ref (REPOSITORY:TAG) in index.json.
// The archive's entries are sorted and time-stamped epoch, so equal images give equal
// archives.
func WriteArchive(w io.Writer, img v1.Image, ref string) error {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return fmt.Errorf("image reference %q has no tag", ref)
	}
	dir, err := os.MkdirTemp("", "podarmor-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	err = p.AppendImage(img,
		layout.WithAnnotations(map[string]string{AnnotationImageName: ref, AnnotationRefName: ref[i+1:]}),
		layout.WithPlatform(platform))
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	return tarDir(w, dir)
}

// tarDir writes the files under dir into a tar stream, in lexical order, owned by root,
// time-stamped epoch, with modes 0755 (directories) and 0644 (files).
func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Typeflag: tar.TypeDir, Mode: 0o755}
		if e.IsDir() {
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("archive %s: %w", dir, err)
	}
	return tw.Close()
}

// entry is one file of a layer.
type entry struct {
	mode fs.FileMode // type and permission bits
	link string      // a symbolic link's target
	src  string      // a regular file's content, on this machine
}

// tree is a layer's content, by absolute path.
type tree map[string]entry

func (t tree) addDefinition(d Definition, inputs map[string]string) error {
	for _, f := range d.Files {
		if err := t.addFile(f, inputs); err != nil {
			return fmt.Errorf("file %s: %w", f.Path, err)
		}
	}
	for _, dir := range d.Dirs {
		mode, _ := parseMode(dir.Mode, 0o755) // Check parsed it
		if err := t.add(dir.Path, entry{mode: fs.ModeDir | mode}); err != nil {
			return err
		}
	}
	for _, l := range d.Links {
		if err := t.add(l.Path, entry{mode: fs.ModeSymlink | 0o777, link: l.Target}); err != nil {
			return err
		}
	}
	return nil
}

func (t tree) addFile(f File, inputs map[string]string) error {
	input, inside, _ := f.source() // Check parsed it
	root, ok := inputs[input]
	if !ok {
		return fmt.Errorf("input %q was not given", input)
	}
	src := root
	if inside != "" {
		var err error
		if src, err = resolveIn(root, inside); err != nil {
			return fmt.Errorf("from %s: %w", f.From, err)
		}
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("from %s: %w", f.From, err)
	}
	mode, _ := parseMode(f.Mode, 0) // Check parsed it
	switch {
	case fi.IsDir():
		if f.Libraries {
			return fmt.Errorf("from %s: libraries: a directory is not an executable", f.From)
		}
		if err := t.addDir(f.Path, src, mode); err != nil {
			return fmt.Errorf("from %s: %w", f.From, err)
		}
	case fi.Mode().IsRegular():
		if mode == 0 {
			mode = fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		}
		if err := t.add(f.Path, entry{mode: mode, src: src}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("from %s: %s is neither a file nor a directory", f.From, src)
	}
	if !f.Libraries {
		return nil
	}
	if inside == "" {
		return fmt.Errorf("from %s: libraries are looked up in an input's root: write INPUT:/PATH", f.From)
	}
	libs, err := sharedLibraries(root, inside)
	if err != nil {
		return fmt.Errorf("libraries of %s: %w", f.From, err)
	}
	// A library reached under two names (the program interpreter is also a DT_NEEDED
	// entry) is stored once; its other names link to it.
	first := map[string]string{}
	for _, l := range libs {
		e := entry{mode: 0o755, src: l.hostPath}
		if p, ok := first[l.hostPath]; ok {
			e = entry{mode: fs.ModeSymlink | 0o777, link: p}
		} else {
			first[l.hostPath] = l.imagePath
		}
		if err := t.add(l.imagePath, e); err != nil {
			return fmt.Errorf("library %s: %w", l.imagePath, err)
		}
	}
	return nil
}

// addDir copies the directory src to p with everything in it; mode, when set, is the
// top directory's.
func (t tree) addDir(p, src string, mode fs.FileMode) error {
	return filepath.WalkDir(src, func(hp string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, hp)
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		ip := path.Join(p, filepath.ToSlash(rel))
		perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch {
		case e.IsDir():
			if rel == "." && mode != 0 {
				perm = mode
			}
			return t.add(ip, entry{mode: fs.ModeDir | perm})
		case e.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(hp)
			if err != nil {
				return err
			}
			return t.add(ip, entry{mode: fs.ModeSymlink | 0o777, link: target})
		case e.Type().IsRegular():
			return t.add(ip, entry{mode: perm, src: hp})
		default:
			return fmt.Errorf("%s: neither a file, a directory nor a symbolic link", hp)
		}
	})
}

// add puts e at the absolute path p, with directories for every parent not yet there.
// Two entries at one path are an error unless both are directories.
func (t tree) add(p string, e entry) error {
	if old, ok := t[p]; ok {
		if !old.mode.IsDir() || !e.mode.IsDir() {
			return fmt.Errorf("%s is in the image twice", p)
		}
		// A directory named again (a parent made before, a declared one) takes the
		// later mode.
		t[p] = e
		return nil
	}
	for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
		old, ok := t[dir]
		if ok && !old.mode.IsDir() {
			return fmt.Errorf("%s: its parent %s is not a directory", p, dir)
		}
		if !ok {
			t[dir] = entry{mode: fs.ModeDir | 0o755}
		}
	}
	t[p] = e
	return nil
}

// write writes the tree as a layer: a tar stream in path order, every entry owned by
// root and time-stamped epoch.
func (t tree) write(w io.Writer) error {
	paths := make([]string, 0, len(t))
	for p := range t {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		e := t[p]
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    tarMode(e.mode),
			ModTime: epoch,
		}
		switch {
		case e.mode.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case e.mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
		default:
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Typeflag != tar.TypeReg {
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		if err := writeFile(tw, hdr, e.src); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, hdr *tar.Header, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr.Size = fi.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("copy %s (did it change while the image was built?): %w", src, err)
	}
	return nil
}

// tarMode is the mode field of a tar header: permission bits plus setuid (04000),
// setgid (02000) and sticky (01000).
func tarMode(m fs.FileMode) int64 {
	v := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		v |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		v |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		v |= 0o1000
	}
	return v
}
