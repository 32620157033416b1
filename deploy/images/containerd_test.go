package images

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestContainerdImportsTheArchives imports every archive of hack/images.sh into a real
// containerd, the 1.7 of Debian trixie that the node runs, started by the test on a unix
// socket in its own directories, with `ctr -n k8s.io images import` exactly as the node
// does, and checks the names the images get and that they unpack.
func TestContainerdImportsTheArchives(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: hack/images.sh builds the enforcer and fetches Debian packages")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("containerd needs root; CI runs as root")
		}
		t.Skip("containerd needs root; CI fails here instead")
	}
	built := runImagesScript(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(repo, "hack/images.sh"), "--containerd").Output()
	if err != nil {
		t.Fatalf("hack/images.sh --containerd: %v", err)
	}
	bin := filepath.Join(strings.TrimSpace(string(out)), "usr/bin")

	// A socket path must fit in 108 bytes: a short directory of its own.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
# Only what an import needs: no CRI, no snapshotter that needs a particular file system.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	must(t, os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600))

	var log bytes.Buffer
	daemon := exec.Command(filepath.Join(bin, "containerd"), "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = daemon.Process.Kill()
		_ = daemon.Wait()
		if t.Failed() {
			t.Logf("containerd's log:\n%s", log.String())
		}
	})

	ctr := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "ctr"), append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := exec.Command(filepath.Join(bin, "ctr"), "--address", sock, "version").Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30 s", sock)
		}
	}

	defs, err := Load(Manifests)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range defs {
		ctr("images", "import", "--snapshotter", "native", filepath.Join(built.dir, d.Name+".tar"))
		want = append(want, d.Ref(built.tag))
	}
	got := strings.Fields(ctr("images", "list", "--quiet"))
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("containerd's images after the imports: %q, want %q", got, want)
	}
	for _, d := range defs {
		ref := d.Ref(built.tag)
		// check: every blob is present and the image is unpacked for this platform.
		if out := ctr("images", "check", "name=="+ref); !strings.Contains(out, "complete") {
			t.Errorf("ctr images check %s: %q, want it complete", ref, out)
		}
		if out := ctr("images", "list", "name=="+ref); !strings.Contains(out, built.digests[d.Name].String()) {
			t.Errorf("ctr images list %s: %q, want the digest %s", ref, out, built.digests[d.Name])
		}
	}
}
