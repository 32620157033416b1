package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/zstd"
)

func TestTheDefinitions(t *testing.T) {
	defs, err := Load(Manifests)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, d := range defs {
		refs = append(refs, d.Ref("0.1.0"))
	}
	want := []string{
		"localhost/podarmor/demo-app:0.1.0",
		"localhost/podarmor/enforcer:0.1.0",
		"localhost/podarmor/pause:3.10",
		"localhost/podarmor/webhook:0.1.0",
	}
	if diff := cmp.Diff(want, refs); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

func TestBadDefinitions(t *testing.T) {
	const good = "name: x\nentrypoint: [/x]\nuser: \"1:1\"\nfiles: [{path: /x, from: x}]\n"
	tests := map[string]struct {
		yaml string
		want string // in the error
	}{
		"an unknown field":            {good + "shell: /bin/sh\n", `unknown field "shell"`},
		"an upper-case name":          {strings.Replace(good, "name: x", "name: X", 1), `name "X"`},
		"a relative entrypoint":       {strings.Replace(good, "[/x]", "[x]", 1), "entrypoint"},
		"a user name, not a number":   {strings.Replace(good, `"1:1"`, "nobody", 1), `user "nobody"`},
		"a user without group":        {strings.Replace(good, `"1:1"`, `"1"`, 1), `user "1"`},
		"no files":                    {strings.Replace(good, "files: [{path: /x, from: x}]", "files: []", 1), "no files"},
		"a relative file path":        {strings.Replace(good, "path: /x", "path: x", 1), `path "x"`},
		"an unclean file path":        {strings.Replace(good, "path: /x", "path: /a/../x", 1), `path "/a/../x"`},
		"a relative path in an input": {strings.Replace(good, "from: x", "from: x:usr/bin/x", 1), "absolute and clean"},
		"a mode that is not octal":    {strings.Replace(good, "from: x}", "from: x, mode: \"0758\"}", 1), `mode "0758"`},
		"a path declared twice":       {good + "links: [{path: /x, target: y}]\n", "/x is declared twice"},
		"a link without target":       {good + "links: [{path: /y}]\n", "link /y: empty target"},
		"an env entry without =":      {good + "env: [PATH]\n", `env "PATH"`},
		"a port without protocol":     {good + "ports: [\"8080\"]\n", `port "8080"`},
		"a tag with a slash":          {good + "tag: a/b\n", `tag "a/b"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestAManifestIsNamedByItsDirectory(t *testing.T) {
	fsys := fstest.MapFS{"a/image.yaml": {Data: []byte("name: b\nentrypoint: [/x]\nuser: \"1:1\"\nfiles: [{path: /x, from: x}]\n")}}
	if _, err := Load(fsys); err == nil || !strings.Contains(err.Error(), `name "b" is not its directory's name "a"`) {
		t.Errorf("Load: error %v, want the name mismatch", err)
	}
}

func TestResolveInStaysInsideTheRoot(t *testing.T) {
	root := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "usr/lib/x86_64-linux-gnu"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "usr/lib/x86_64-linux-gnu/libc.so.6"), []byte("libc"), 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "usr/lib64"), 0o755))
	must(t, os.Symlink("../lib/x86_64-linux-gnu/libc.so.6", filepath.Join(root, "usr/lib64/relative")))
	must(t, os.Symlink("/usr/lib/x86_64-linux-gnu/libc.so.6", filepath.Join(root, "usr/lib64/absolute")))
	must(t, os.Symlink("../../../../../../etc/passwd", filepath.Join(root, "usr/lib64/escape")))
	must(t, os.Symlink("loop", filepath.Join(root, "usr/lib64/loop")))
	libc := filepath.Join(root, "usr/lib/x86_64-linux-gnu/libc.so.6")
	tests := map[string]struct {
		path string
		want string
		err  string
	}{
		"a relative link":                     {path: "/usr/lib64/relative", want: libc},
		"an absolute link starts at the root": {path: "/usr/lib64/absolute", want: libc},
		"dot-dot stops at the root":           {path: "/usr/lib64/escape", err: "no such file"},
		"a link loop":                         {path: "/usr/lib64/loop", err: "more than 40 symbolic links"},
		"a missing file":                      {path: "/lib64/x", err: "no such file"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := resolveIn(root, tc.path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("resolveIn(%s) = %q, %v; want an error containing %q", tc.path, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("resolveIn(%s) = %q, %v; want %q", tc.path, got, err, tc.want)
			}
		})
	}
}

// testDefinition is an image of this machine's own /usr/bin/true with its libraries, a
// static file from an input, a directory tree, a sticky directory and a link.
const testDefinition = `
name: test
entrypoint: [/usr/bin/true]
cmd: [--version]
user: "65532:65532"
env: [PATH=/usr/bin]
ports: [8080/tcp]
files:
  - path: /usr/bin/true
    from: host:/usr/bin/true
    libraries: true
  - path: /usr/local/bin/tool
    from: tool
    mode: "0750"
  - path: /etc/tree
    from: tree
dirs:
  - path: /tmp
    mode: "1777"
links:
  - {path: /bin/t, target: ../usr/bin/true}
`

func testInputs(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool")
	must(t, os.WriteFile(tool, []byte("#!tool\n"), 0o644))
	tree := filepath.Join(dir, "tree")
	must(t, os.Mkdir(tree, 0o755))
	must(t, os.Mkdir(filepath.Join(tree, "sub"), 0o700))
	must(t, os.WriteFile(filepath.Join(tree, "sub", "a"), []byte("a"), 0o600))
	must(t, os.Symlink("sub/a", filepath.Join(tree, "link")))
	return map[string]string{"host": "/", "tool": tool, "tree": tree}
}

func TestBuild(t *testing.T) {
	def, err := Parse([]byte(testDefinition))
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(def, Config{Tag: "1.2.3", Inputs: testInputs(t)})
	if err != nil {
		t.Fatal(err)
	}
	// validate.Image runs on the archive's image (TestArchivesAreReproducibleAndImportable):
	// in memory, the layer's descriptor holds an empty annotation map that its JSON omits,
	// which validate reports as a mismatch.

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	wantConfig := v1.Config{
		Entrypoint:   []string{"/usr/bin/true"},
		Cmd:          []string{"--version"},
		User:         "65532:65532",
		Env:          []string{"PATH=/usr/bin"},
		WorkingDir:   "/",
		ExposedPorts: map[string]struct{}{"8080/tcp": {}},
		Labels:       map[string]string{"org.opencontainers.image.title": "test", "org.opencontainers.image.version": "1.2.3"},
	}
	if diff := cmp.Diff(wantConfig, cf.Config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(epoch) {
		t.Errorf("config: os %q, architecture %q, created %v; want linux, amd64, %v", cf.OS, cf.Architecture, cf.Created, epoch)
	}

	files := layerFiles(t, img)
	for p, want := range map[string]string{
		"usr/bin/true":       "-rwxr-xr-x",
		"usr/local/bin/tool": "-rwxr-x---",
		"etc/tree/":          "drwxr-xr-x",
		"etc/tree/sub/":      "drwx------",
		"etc/tree/sub/a":     "-rw-------",
		"etc/tree/link":      "Lrwxrwxrwx -> sub/a",
		"tmp/":               "dtrwxrwxrwx",
		"bin/t":              "Lrwxrwxrwx -> ../usr/bin/true",
		"usr/":               "drwxr-xr-x",
	} {
		if got := files[p]; got != want {
			t.Errorf("%s: %q, want %q", p, got, want)
		}
	}
	// ldd's view of the host's true: its loader and libc, in the directories where the
	// host keeps them.
	interp, _, err := dynamic("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{strings.TrimPrefix(interp, "/"), "lib/x86_64-linux-gnu/libc.so.6"} {
		if files[p] == "" {
			t.Errorf("%s is not in the image; it has %s", p, strings.Join(slices.Sorted(maps.Keys(files)), " "))
		}
	}

	// It runs, with only what the image holds.
	root := extract(t, img)
	runIn(t, root, "/usr/bin/true")
}

func TestBuildNamesWhatIsMissing(t *testing.T) {
	def, err := Parse([]byte(testDefinition))
	if err != nil {
		t.Fatal(err)
	}
	inputs := testInputs(t)
	delete(inputs, "tool")
	if _, err := Build(def, Config{Tag: "1", Inputs: inputs}); err == nil || !strings.Contains(err.Error(), `image test: file /usr/local/bin/tool: input "tool" was not given`) {
		t.Errorf("Build without the input tool: %v", err)
	}
	inputs = testInputs(t)
	inputs["host"] = t.TempDir()
	if _, err := Build(def, Config{Tag: "1", Inputs: inputs}); err == nil || !strings.Contains(err.Error(), "from host:/usr/bin/true") {
		t.Errorf("Build with an empty host root: %v", err)
	}
	if _, err := Build(def, Config{Inputs: testInputs(t)}); err == nil || !strings.Contains(err.Error(), `tag ""`) {
		t.Errorf("Build without a tag: %v", err)
	}
}

func TestArchivesAreReproducibleAndImportable(t *testing.T) {
	def, err := Parse([]byte(testDefinition))
	if err != nil {
		t.Fatal(err)
	}
	var archives [2][]byte
	var digests [2]v1.Hash
	for i := range archives {
		// Fresh inputs each time: other paths, other time stamps, same content.
		img, err := Build(def, Config{Tag: "1.2.3", Inputs: testInputs(t)})
		if err != nil {
			t.Fatal(err)
		}
		if digests[i], err = img.Digest(); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := WriteArchive(&buf, img, def.Ref("1.2.3")); err != nil {
			t.Fatal(err)
		}
		archives[i] = buf.Bytes()
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds: image digests %s and %s", digests[0], digests[1])
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Errorf("two builds: archives differ (sha256 %x and %x)", sha256.Sum256(archives[0]), sha256.Sum256(archives[1]))
	}
	checkArchive(t, archives[0], "localhost/podarmor/test:1.2.3", digests[0])
}

// checkArchive checks that an archive is an OCI layout holding exactly one image named
// ref with the given digest, for linux/amd64, and valid throughout.
func checkArchive(t *testing.T, archive []byte, ref string, digest v1.Hash) v1.Image {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(bytes.NewReader(archive))
	var names []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if !hdr.ModTime.Equal(epoch) || hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: time %v, owner %d:%d; want %v, 0:0", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, epoch)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		must(t, os.WriteFile(p, data, 0o644))
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "oci-layout") || !slices.Contains(names, "index.json") {
		t.Errorf("archive entries %q: want sorted, with oci-layout and index.json", names)
	}

	var index v1.IndexManifest
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	must(t, json.Unmarshal(raw, &index))
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1:\n%s", len(index.Manifests), raw)
	}
	m := index.Manifests[0]
	tag := ref[strings.LastIndex(ref, ":")+1:]
	if m.Annotations[AnnotationImageName] != ref || m.Annotations[AnnotationRefName] != tag {
		t.Errorf("index.json annotations %v: want %s=%s and %s=%s", m.Annotations, AnnotationImageName, ref, AnnotationRefName, tag)
	}
	if m.Digest != digest || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("index.json: manifest %s of type %s; want %s of type application/vnd.oci.image.manifest.v1+json", m.Digest, m.MediaType, digest)
	}
	if m.Platform == nil || m.Platform.OS != "linux" || m.Platform.Architecture != "amd64" {
		t.Errorf("index.json: platform %v, want linux/amd64", m.Platform)
	}

	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	// validate's layer check reads gzip only: the zstd layer is checked below.
	if err := validate.Index(idx, validate.Fast); err != nil {
		t.Errorf("validate.Index: %v", err)
	}
	img, err := idx.Image(digest)
	if err != nil {
		t.Fatal(err)
	}
	checkLayers(t, img)
	return img
}

// checkLayers checks that each layer of img is zstd and has the digest and diff ID
// its manifest and config give.
func checkLayers(t *testing.T, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != len(cf.RootFS.DiffIDs) {
		t.Fatalf("%d layers in the manifest, %d diff IDs in the config", len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, desc := range m.Layers {
		if desc.MediaType != types.OCILayerZStd {
			t.Errorf("layer %d: media type %s, want %s", i, desc.MediaType, types.OCILayerZStd)
		}
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("sha256:%x", sha256.Sum256(data)); got != desc.Digest.String() || int64(len(data)) != desc.Size {
			t.Errorf("layer %d: %s of %d bytes; the manifest says %s of %d", i, got, len(data), desc.Digest, desc.Size)
		}
		dec, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, dec)
		dec.Close()
		if err != nil {
			t.Fatalf("layer %d: zstd: %v", i, err)
		}
		if got := fmt.Sprintf("sha256:%x", h.Sum(nil)); got != cf.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d: uncompressed %s; the config's diff ID is %s", i, got, cf.RootFS.DiffIDs[i])
		}
	}
}

// layerFiles lists the image's files by tar entry name, each as its mode (as ls shows
// it) and, for a link, " -> target".
func layerFiles(t *testing.T, img v1.Image) map[string]string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: owner %d:%d, time %v; want 0:0, %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime, epoch)
		}
		s := hdr.FileInfo().Mode().String()
		if hdr.Typeflag == tar.TypeSymlink {
			s += " -> " + hdr.Linkname
		}
		files[hdr.Name] = s
	}
}

// extract unpacks the image's file system into a temporary directory.
func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	return extractTo(t, img, t.TempDir())
}

// extractTo unpacks the image's file system into the directory root.
func extractTo(t *testing.T, img v1.Image, root string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return root
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.FromSlash(hdr.Name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			must(t, os.MkdirAll(p, 0o755))
			must(t, os.Chmod(p, hdr.FileInfo().Mode()))
		case tar.TypeSymlink:
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.Symlink(hdr.Linkname, p))
		case tar.TypeReg:
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, hdr.FileInfo().Mode().Perm())
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(f, tr)
			must(t, errors.Join(err, f.Close()))
		default:
			t.Fatalf("%s: unexpected tar entry type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

// runIn runs a command chrooted into root, so that it sees only what the image holds,
// and returns its output. Chroot needs root, which CI has.
func runIn(t *testing.T, root string, argv ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("running a command inside an image's root needs chroot, so root; CI runs as root")
		}
		t.Skip("running a command inside an image's root needs root (chroot); CI fails here instead")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s inside the image: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
