package node

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/vm"
)

// testImage is the image the node test imports and runs: busybox (static, from the
// host's busybox-static) and a page for its httpd.
const (
	testImage = "localhost/podarmor/node-test:1"
	testPage  = "served by a container on the podarmor node\n"
	hostHello = "hello from the host's side of the forward"
)

// selftest runs in the guest (the node share's selftest.sh) once containerd is up and
// the images are imported. Each check prints "CHECK NAME ok" or "CHECK NAME FAILED".
const selftest = `set -u
fail=0
check() {
	local name="$1"; shift
	if "$@"; then echo "CHECK $name ok"; else echo "CHECK $name FAILED"; fail=1; fi
}
has_lsm() { tr , '\n' </sys/kernel/security/lsm | grep -qx "$1"; }
echo "lsm: $(cat /sys/kernel/security/lsm)"
ctr version
check ctr-version ctr version
check lsm-apparmor has_lsm apparmor
check lsm-bpf has_lsm bpf
check apparmor-enabled grep -qx Y /sys/module/apparmor/parameters/enabled
check nri-socket test -S /var/run/nri/nri.sock
ctr -n k8s.io images ls
check image-imported sh -c 'ctr -n k8s.io images ls -q | grep -qx ` + testImage + `'
# A container under an AppArmor profile that containerd generates and loads with
# apparmor_parser.
out="$(ctr -n k8s.io run --rm --apparmor-default-profile podarmor-node-test ` + testImage + ` selftest-run /bin/busybox sh -c 'echo hello-from-a-container; cat /proc/self/attr/current')"
echo "ctr run: $out"
check ctr-run test "$out" = "$(printf 'hello-from-a-container\npodarmor-node-test (enforce)')"
# A container on the node's network, which the host reaches through the proxy.
check ctr-run-detached ctr -n k8s.io run -d --net-host ` + testImage + ` selftest-web /bin/busybox httpd -f -p 8080 -h /www
# The forward to the host.
fwd() { exec 3<>/dev/tcp/10.0.2.100/6443 && read -r line <&3 && echo "forward: $line" && test "$line" = "` + hostHello + `"; }
check guestfwd fwd
exit $fail
`

func TestNodeVM(t *testing.T) {
	vm.Require(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()

	start := time.Now()
	image, err := Image(ctx, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s (%s)", image, time.Since(start).Round(time.Second))

	dir := t.TempDir()
	share := filepath.Join(dir, "node")
	if err := os.MkdirAll(filepath.Join(share, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeOCIArchive(t, filepath.Join(share, "images", "node-test.tar"), testImage, map[string]ociFile{
		"bin/":           {dir: true},
		"bin/busybox":    {mode: 0o755, data: staticBusybox(t)},
		"bin/sh":         {link: "busybox"},
		"www/":           {dir: true},
		"www/index.html": {mode: 0o644, data: []byte(testPage)},
	}, []string{"/bin/sh"})
	writeFile(t, filepath.Join(share, "node.env"), "NODE_NAME=podarmor-node\nPOD_CIDR=10.244.0.0/24\nSERVICE_CIDR=10.96.0.0/16\n")
	writeFile(t, filepath.Join(share, "selftest.sh"), selftest)

	// What the guest reaches at 10.0.2.100:6443: a line from the host.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, hostHello)
			c.Close()
		}
	}()

	v, err := Start(ctx, Config{Dir: dir, Image: image, APIServer: ln.Addr().String(), Log: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			v.Kill()
		}
		if t.Failed() {
			for _, f := range []string{ConsoleFile, "logs/journal.log"} {
				data, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("--- %s (end):\n%s", f, tail(string(data), 80))
			}
		}
	})
	up, err := v.WaitUp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("up after %s: %s", time.Since(start).Round(time.Second), up)
	// Without kubelet and kube-proxy binaries in the share, their units stay off.
	for _, want := range []string{"containerd=active", "podarmor-images=active", "podarmor-node-proxy=active", "podarmor-kubelet=inactive"} {
		if !strings.Contains(up, want) {
			t.Errorf("the node's up line lacks %q", want)
		}
	}

	code, log := waitSelftest(ctx, t, dir, v)
	t.Logf("selftest.log:\n%s", log)
	for _, check := range []string{"ctr-version", "lsm-apparmor", "lsm-bpf", "apparmor-enabled", "nri-socket", "image-imported", "ctr-run", "ctr-run-detached", "guestfwd"} {
		if !strings.Contains(log, "CHECK "+check+" ok\n") {
			t.Errorf("check %s did not pass in the guest", check)
		}
	}
	if code != "0" {
		t.Errorf("selftest.sh exited %s", code)
	}

	// The host reaches a container on the node's network through the guest's proxy.
	page, err := getThroughProxy(v.ProxyAddr, GuestIP+":8080", "/index.html")
	if err != nil {
		t.Errorf("GET http://%s:8080/index.html through the proxy: %v", GuestIP, err)
	} else if page != testPage {
		t.Errorf("GET through the proxy: %q, want %q", page, testPage)
	}
	// It refuses what is not the node's: the host's forward address, QEMU's gateway.
	for _, target := range []string{APIServerGuestAddr, "10.0.2.2:22", "127.0.0.1:10248"} {
		status, err := connectStatus(v.ProxyAddr, target)
		if err != nil {
			t.Errorf("CONNECT %s: %v", target, err)
		} else if !strings.Contains(status, " 403 ") {
			t.Errorf("CONNECT %s: %q, want 403", target, status)
		}
	}

	stopStart := time.Now()
	err = v.Shutdown(90 * time.Second)
	stopped = true
	if err != nil {
		t.Errorf("shutdown: %v", err)
	} else {
		t.Logf("clean shutdown in %s", time.Since(stopStart).Round(100*time.Millisecond))
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// staticBusybox returns the host's busybox, which must be static (busybox-static,
// hack/deps.sh vm) to run in the test image.
func staticBusybox(t *testing.T) []byte {
	t.Helper()
	path, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatalf("busybox (hack/deps.sh vm installs busybox-static): %v", err)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked; the test image needs busybox-static", path)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// waitSelftest waits for the guest's selftest.sh to finish and returns its exit code and
// output.
func waitSelftest(ctx context.Context, t *testing.T, dir string, v *VM) (string, string) {
	t.Helper()
	for {
		if code, err := os.ReadFile(filepath.Join(dir, "logs", "selftest.exit")); err == nil {
			log, _ := os.ReadFile(filepath.Join(dir, "logs", "selftest.log"))
			return strings.TrimSpace(string(code)), string(log)
		}
		select {
		case <-v.Done():
			t.Fatalf("the VM ended before selftest.sh did: %v", v.Wait())
		case <-ctx.Done():
			t.Fatalf("waiting for selftest.sh: %v", ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// connect opens a tunnel to target through the proxy at proxyAddr and returns the
// proxy's status line with the connection and its reader.
func connect(proxyAddr, target string) (string, net.Conn, *bufio.Reader, error) {
	c, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		return "", nil, nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		return "", nil, nil, fmt.Errorf("read the proxy's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	}
	return resp.Proto + " " + resp.Status, c, br, nil
}

func connectStatus(proxyAddr, target string) (string, error) {
	status, c, _, err := connect(proxyAddr, target)
	if err == nil {
		c.Close()
	}
	return status, err
}

// getThroughProxy GETs path from target (an HTTP server) through the proxy.
func getThroughProxy(proxyAddr, target, path string) (string, error) {
	status, c, br, err := connect(proxyAddr, target)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if !strings.Contains(status, " 200 ") {
		return "", fmt.Errorf("CONNECT %s: %s", target, status)
	}
	fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, target)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, body)
	}
	return string(body), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
