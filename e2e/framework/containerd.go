package framework

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Containerd is a containerd daemon a test started: Debian trixie's 1.7, the one the
// local cluster's node runs (hack/images.sh --containerd fetches it), listening on a unix
// socket in a directory of its own, with only the plugins that need no particular file
// system and no CRI. It needs root: CI runs as root and fails without it, elsewhere the
// test is skipped.
type Containerd struct {
	// Socket is the gRPC socket.
	Socket string
	bin    string
	dir    string

	mu  sync.Mutex
	cmd *exec.Cmd
	log bytes.Buffer
}

// StartContainerd starts a containerd for the test and stops it when the test ends.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("containerd needs root; CI runs as root")
		}
		t.Skip("containerd needs root; CI fails here instead")
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "hack/images.sh"), "--containerd").Output()
	if err != nil {
		t.Fatalf("hack/images.sh --containerd: %v", err)
	}
	// A socket path must fit in 108 bytes: a short directory of its own.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Socket: filepath.Join(dir, "sock"), bin: filepath.Join(strings.TrimSpace(string(out)), "usr/bin"), dir: dir}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing", "io.containerd.nri.v1.nri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			c.mu.Lock()
			t.Logf("containerd's log:\n%s", c.log.String())
			c.mu.Unlock()
		}
		os.RemoveAll(dir)
	})
	c.Start(t)
	return c
}

// Start starts the daemon (again, after Stop) and waits until it answers.
func (c *Containerd) Start(t testing.TB) {
	t.Helper()
	c.mu.Lock()
	cmd := exec.Command(filepath.Join(c.bin, "containerd"), "--config", filepath.Join(c.dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = &c.log, &c.log
	// containerd finds its runc shim on PATH, and the shim finds runc there.
	cmd.Env = append(os.Environ(), "PATH="+c.bin+":"+os.Getenv("PATH"))
	err := cmd.Start()
	if err == nil {
		c.cmd = cmd
	}
	c.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := exec.Command(filepath.Join(c.bin, "ctr"), "--address", c.Socket, "version").Run(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30 s", c.Socket)
		}
	}
}

// Stop kills the daemon, as a crash would, and waits for it.
func (c *Containerd) Stop() {
	c.mu.Lock()
	cmd := c.cmd
	c.cmd = nil
	c.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Ctr runs containerd's ctr against the daemon, in containerd namespace ns, and returns
// its output; the test fails if ctr does.
func (c *Containerd) Ctr(t testing.TB, ns string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "ctr"), append([]string{"--address", c.Socket, "--namespace", ns}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
