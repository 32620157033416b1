package images

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/podarmor/podarmor/e2e/framework"
)

// TestContainerdImportsTheArchives imports every archive of hack/images.sh into a real
// containerd, the 1.7 of Debian trixie that the node runs, started by the test on a unix
// socket in its own directories, with `ctr -n k8s.io images import` exactly as the node
// does, and checks the names the images get and that they unpack.
func TestContainerdImportsTheArchives(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: hack/images.sh builds the enforcer and fetches Debian packages")
	}
	ctrd := framework.StartContainerd(t)
	built := runImagesScript(t)
	ctr := func(args ...string) string {
		t.Helper()
		return ctrd.Ctr(t, "k8s.io", args...)
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
