package images

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// builtImages is what hack/images.sh made: its directory, the tag, the inputs it gave the
// builder, and each image's digest by name.
type builtImages struct {
	dir     string
	tag     string
	inputs  map[string]string
	hashes  map[string]string // sha256 of the input files
	digests map[string]v1.Hash
}

// runImagesScript runs hack/images.sh and reads what it wrote besides the archives.
func runImagesScript(t *testing.T) builtImages {
	t.Helper()
	b, err := imagesScript()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// imagesScript is hack/images.sh's result, shared by the tests of one run.
var imagesScript = sync.OnceValues(runImagesScriptOnce)

func runImagesScriptOnce() (builtImages, error) {
	repo, err := filepath.Abs("../..")
	if err != nil {
		return builtImages{}, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(repo, "hack/images.sh"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return builtImages{}, fmt.Errorf("hack/images.sh: %w\n%s", err, stderr.String())
	}
	return readBuilt(strings.TrimSpace(stdout.String()))
}

// readBuilt reads inputs.txt and images.txt of hack/images.sh's directory.
func readBuilt(dir string) (builtImages, error) {
	b := builtImages{
		dir:     dir,
		inputs:  map[string]string{},
		hashes:  map[string]string{},
		digests: map[string]v1.Hash{},
	}
	if strings.Contains(dir, "\n") || !filepath.IsAbs(dir) {
		return b, fmt.Errorf("hack/images.sh printed %q, want one absolute directory", dir)
	}
	lines, err := readLines(filepath.Join(dir, "inputs.txt"))
	if err != nil {
		return b, err
	}
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "tag":
			b.tag = f[1]
		case len(f) == 3:
			b.inputs[f[0]] = f[1]
			if f[2] != "-" {
				b.hashes[f[1]] = f[2]
			}
		default:
			return b, fmt.Errorf("inputs.txt: unexpected line %q", line)
		}
	}
	if lines, err = readLines(filepath.Join(dir, "images.txt")); err != nil {
		return b, err
	}
	for _, line := range lines {
		ref, digest, _ := strings.Cut(line, " ")
		h, err := v1.NewHash(digest)
		if err != nil {
			return b, fmt.Errorf("images.txt: %q: %w", line, err)
		}
		name := strings.TrimPrefix(ref[:strings.LastIndex(ref, ":")], Repository+"/")
		b.digests[name] = h
	}
	return b, nil
}

// unchanged reports whether the input files still have the content the images were built
// from (another checkout's run of hack/images.sh may have rebuilt them since).
func (b builtImages) unchanged(t *testing.T) bool {
	for p, want := range b.hashes {
		out, err := exec.Command("sha256sum", p).Output()
		if err != nil {
			t.Fatal(err)
		}
		if got, _, _ := strings.Cut(string(out), " "); got != want {
			return false
		}
	}
	return true
}

func TestTheImagesHackImagesShBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: hack/images.sh builds the enforcer and fetches Debian packages")
	}
	built := runImagesScript(t)
	defs, err := Load(Manifests)
	if err != nil {
		t.Fatal(err)
	}
	if len(built.digests) != len(defs) {
		t.Errorf("images.txt names %d images, want %d", len(built.digests), len(defs))
	}
	// Rebuilt from the same inputs, every archive comes out byte for byte the same. An
	// input rebuilt meanwhile by another run is taken as it is now, once.
	rebuild := func(d Definition) []byte {
		img, err := Build(d, Config{Tag: built.tag, Inputs: built.inputs})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteArchive(&buf, img, d.Ref(built.tag)); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if !built.unchanged(t) {
		t.Log("an input changed since hack/images.sh ran; running it again")
		if built, err = runImagesScriptOnce(); err != nil {
			t.Fatal(err)
		}
	}

	// The roots outlive the subtests that unpack them.
	rootsDir := t.TempDir()
	roots := map[string]string{}
	for _, d := range defs {
		t.Run(d.Name, func(t *testing.T) {
			archive, err := os.ReadFile(filepath.Join(built.dir, d.Name+".tar"))
			if err != nil {
				t.Fatal(err)
			}
			if again := rebuild(d); !bytes.Equal(archive, again) {
				t.Errorf("a second build from the same inputs differs from %s.tar", d.Name)
			}
			img := checkArchive(t, archive, d.Ref(built.tag), built.digests[d.Name])
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			got := [][]string{cf.Config.Entrypoint, cf.Config.Cmd, {cf.Config.User}, cf.Config.Env}
			want := [][]string{d.Entrypoint, d.Cmd, {d.User}, d.Env}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("entrypoint, cmd, user, env (-definition +image):\n%s", diff)
			}
			files := layerFiles(t, img)
			for _, f := range d.Files {
				name := strings.TrimPrefix(f.Path, "/")
				mode := files[name]
				if mode == "" {
					mode = files[name+"/"] // a directory
				}
				if mode == "" {
					t.Errorf("%s is not in the image", f.Path)
				} else if f.Mode == "0755" && mode != "-rwxr-xr-x" {
					t.Errorf("%s: mode %s, want -rwxr-xr-x", f.Path, mode)
				}
			}
			root := filepath.Join(rootsDir, d.Name)
			must(t, os.Mkdir(root, 0o755))
			roots[d.Name] = extractTo(t, img, root)
		})
	}
	if t.Failed() {
		return
	}

	t.Run("our binaries are static", func(t *testing.T) {
		for image, p := range map[string]string{
			"enforcer": "/usr/local/bin/podarmor-enforcer",
			"webhook":  "/usr/local/bin/podarmor-webhook",
			"pause":    "/pause",
			"demo-app": "/usr/local/bin/demo-app",
		} {
			if interp := interpreter(t, filepath.Join(roots[image], p)); interp != "" {
				t.Errorf("%s in %s: dynamically linked (interpreter %s)", p, image, interp)
			}
		}
	})
	t.Run("the enforcer's apparmor_parser runs in the image and compiles podarmor's profiles", func(t *testing.T) {
		root := roots["enforcer"]
		if out := runIn(t, root, "/usr/sbin/apparmor_parser", "--version"); !strings.Contains(out, "version 4.1.0") {
			t.Errorf("apparmor_parser --version: %q, want version 4.1.0 (the pin in hack/images.sh)", out)
		}
		profile, err := os.ReadFile("../../policies/compile/testdata/golden/enhance-protect.apparmor")
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(filepath.Join(root, "tmp/profile"), profile, 0o644))
		runIn(t, root, "/usr/sbin/apparmor_parser", "-Q", "-K", "--kernel-features", "/etc/apparmor.d/abi/3.0", "/tmp/profile")
		runIn(t, root, "/usr/local/bin/podarmor-enforcer", "--help")
	})
	t.Run("the demo app's busybox has the tools the demo's attacks use", func(t *testing.T) {
		root := roots["demo-app"]
		out := runIn(t, root, "/bin/sh", "-c", "echo hello | cat; busybox --list")
		applets := strings.Fields(out)
		if len(applets) == 0 || applets[0] != "hello" {
			t.Fatalf("sh -c 'echo hello | cat': %q", out)
		}
		for _, tool := range []string{"cat", "echo", "mount", "wget", "nc", "unshare", "sh"} {
			if !slices.Contains(applets, tool) {
				t.Errorf("busybox has no %s applet", tool)
			}
		}
		runIn(t, root, "/usr/local/bin/demo-app", "-h")
	})
	t.Run("pause says its version", func(t *testing.T) {
		if out := runIn(t, roots["pause"], "/pause", "-v"); !strings.Contains(out, "3.10") {
			t.Errorf("pause -v: %q", out)
		}
	})
}

// interpreter returns an ELF file's program interpreter, "" for a static executable.
func interpreter(t *testing.T, file string) string {
	t.Helper()
	f, err := elf.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			return strings.TrimRight(string(b), "\x00")
		}
	}
	return ""
}

// readLines returns a file's lines, without blank lines and # comments.
func readLines(file string) ([]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var lines []string
	for l := range strings.Lines(string(data)) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
