// Command image-build builds podarmor's container images (deploy/images) as OCI image
// archives, one NAME.tar each in the output directory, for `ctr images import`.
// hack/images.sh runs it with the binaries and unpacked Debian packages it prepared:
//
//	image-build --tag 0.1.0 --out DIR --input podarmor-enforcer=PATH --input apparmor=DIR ... [NAME ...]
//
// Without NAMEs it builds every image. It prints each image's name and digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/podarmor/podarmor/deploy/images"
)

// inputs collects repeated --input NAME=PATH flags.
type inputs map[string]string

func (in inputs) String() string { return fmt.Sprint(map[string]string(in)) }

func (in inputs) Set(s string) error {
	name, p, ok := strings.Cut(s, "=")
	if !ok || name == "" || p == "" {
		return fmt.Errorf("%q: want NAME=PATH", s)
	}
	if _, dup := in[name]; dup {
		return fmt.Errorf("input %s given twice", name)
	}
	in[name] = p
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image-build:", err)
		os.Exit(1)
	}
}

func run() error {
	in := inputs{}
	tag := flag.String("tag", "", "the tag of images without a fixed one (the chart's appVersion)")
	out := flag.String("out", "", "the directory to write NAME.tar into")
	flag.Var(in, "input", "NAME=PATH: where an input the definitions name is (repeatable)")
	flag.Parse()
	if *out == "" {
		return fmt.Errorf("--out is required")
	}

	defs, err := images.Load(images.Manifests)
	if err != nil {
		return err
	}
	if names := flag.Args(); len(names) > 0 {
		defs = slices.DeleteFunc(defs, func(d images.Definition) bool { return !slices.Contains(names, d.Name) })
		if len(defs) != len(names) {
			return fmt.Errorf("unknown image among %s", strings.Join(names, " "))
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, d := range defs {
		img, err := images.Build(d, images.Config{Tag: *tag, Inputs: in})
		if err != nil {
			return err
		}
		if err := writeArchive(filepath.Join(*out, d.Name+".tar"), img, d.Ref(*tag)); err != nil {
			return fmt.Errorf("image %s: %w", d.Name, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s %s\n", d.Ref(*tag), digest)
	}
	return nil
}

// writeArchive writes the archive next to file and renames it into place, so that file
// is complete whenever it exists.
func writeArchive(file string, img v1.Image, ref string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := images.WriteArchive(tmp, img, ref); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
