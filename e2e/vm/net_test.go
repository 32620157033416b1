package vm

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestForwards boots each kernel with forwards to an HTTP server on the host's
// loopback and runs internal/guest's TestNetwork in the guest: every new connection
// the guest opens to either forward (Go's HTTP client, busybox wget) reaches the
// server, a forward whose host port has no listener accepts and closes, and neither
// the server's port nor another listener of the host is reachable at QEMU's gateway
// 10.0.2.2, which carries connections to the host's loopback when restrict=on is
// missing. The host then checks that the server saw exactly the guest's requests and
// the other listener no connection.
//
// The guest tries no address outside 10.0.2.2: without restrict=on (a regression),
// QEMU would carry such a connection out of the machine. That restrict=on is on the
// command line is TestNetArgs's to check.
func TestForwards(t *testing.T) {
	Require(t)
	binary := BuildGoTest(t, GoTest{Package: "./internal/guest"})
	for _, series := range Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			body := "hello from the host " + nonce()
			var mu sync.Mutex
			requests := map[string]int{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				requests[r.URL.Path]++
				mu.Unlock()
				io.WriteString(w, body)
			}))
			defer srv.Close()
			other, accepted := countingListener(t)
			closed := closedPort(t)

			srvPort := srv.Listener.Addr().(*net.TCPAddr).Port
			res := RunGoTest(t, series, GoTest{
				Package: "./internal/guest",
				Binary:  binary,
				Args: []string{
					"-test.run=TestNetwork",
					"-fetch=http://" + ForwardIP + "/one,http://10.0.2.101:6443/two",
					"-body=" + body,
					"-closed=" + ForwardIP + ":7",
					"-unreachable=10.0.2.2:" + strconv.Itoa(srvPort) + ",10.0.2.2:" + strconv.Itoa(other),
				},
				Forwards: []Forward{
					{GuestAddr: ForwardIP + ":80", Host: srv.Listener.Addr().String()},
					{GuestAddr: "10.0.2.101:6443", Host: srv.Listener.Addr().String()},
					{GuestAddr: ForwardIP + ":7", Host: "127.0.0.1:" + strconv.Itoa(closed)},
				},
			})
			if !strings.Contains(res.Output, "--- PASS: TestNetwork") {
				t.Errorf("the guest's output has no passing TestNetwork")
			}
			// internal/guest's TestNetwork: 3 requests one after the other, 4 at once
			// and one of busybox wget to each URL.
			mu.Lock()
			defer mu.Unlock()
			for _, p := range []string{"/one", "/two"} {
				if requests[p] != 8 {
					t.Errorf("the server saw %d requests for %s, want the guest's 8 (all: %v)", requests[p], p, requests)
				}
			}
			if n := accepted.Load(); n != 0 {
				t.Errorf("the listener that is not forwarded accepted %d connections", n)
			}
			if !strings.Contains(res.Console, "vm: forward "+ForwardIP+":7->") {
				t.Errorf("the console does not say that the forward without a listener closed a connection")
			}
		})
	}
}

// TestForwardConfig checks how Run's config takes forwards: only guest addresses that
// QEMU can forward, only host addresses on the loopback.
func TestForwardConfig(t *testing.T) {
	tests := map[string]struct {
		fwds    []Forward
		wantErr string
	}{
		"no forwards":        {},
		"two forwards":       {fwds: []Forward{{"10.0.2.100:6443", "127.0.0.1:1234"}, {"10.0.2.100:80", "[::1]:80"}}},
		"another loopback":   {fwds: []Forward{{"10.0.2.4:1", "127.1.2.3:1"}}},
		"a guest port twice": {fwds: []Forward{{"10.0.2.100:80", "127.0.0.1:1"}, {"10.0.2.100:80", "127.0.0.1:2"}}, wantErr: "the same guest address"},
		"no guest port":      {fwds: []Forward{{"10.0.2.100", "127.0.0.1:1"}}, wantErr: "not an IPv4 address and port"},
		"a guest name":       {fwds: []Forward{{"apiserver:6443", "127.0.0.1:1"}}, wantErr: "not an IPv4 address and port"},
		"an IPv6 guest":      {fwds: []Forward{{"[fec0::100]:80", "127.0.0.1:1"}}, wantErr: "not an IPv4 address and port"},
		"guest port 0":       {fwds: []Forward{{"10.0.2.100:0", "127.0.0.1:1"}}, wantErr: "not an IPv4 address and port"},
		"outside the guest's network": {
			fwds: []Forward{{"10.0.3.100:80", "127.0.0.1:1"}}, wantErr: "outside the guest's network 10.0.2.0/24",
		},
		"the gateway":             {fwds: []Forward{{"10.0.2.2:80", "127.0.0.1:1"}}, wantErr: "QEMU's gateway"},
		"the DNS server":          {fwds: []Forward{{"10.0.2.3:53", "127.0.0.1:1"}}, wantErr: "DNS server"},
		"the guest's own":         {fwds: []Forward{{"10.0.2.15:80", "127.0.0.1:1"}}, wantErr: "the guest's own address"},
		"a host name":             {fwds: []Forward{{"10.0.2.100:80", "localhost:80"}}, wantErr: "not an IP and port"},
		"a host off loopback":     {fwds: []Forward{{"10.0.2.100:80", "192.0.2.1:80"}}, wantErr: "not on the loopback"},
		"a host without port":     {fwds: []Forward{{"10.0.2.100:80", "127.0.0.1"}}, wantErr: "not an IP and port"},
		"the host's any addr":     {fwds: []Forward{{"10.0.2.100:80", "0.0.0.0:80"}}, wantErr: "not on the loopback"},
		"host port 0":             {fwds: []Forward{{"10.0.2.100:80", "127.0.0.1:0"}}, wantErr: "not an IP and port"},
		"an IPv4-mapped loopback": {fwds: []Forward{{"10.0.2.100:80", "[::ffff:127.0.0.1]:80"}}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg := Config{Kernel: "k", Command: []string{"true"}, Forwards: tc.fwds}
			err := cfg.defaults()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestNetArgs checks QEMU's network arguments: restrict=on, one guestfwd rule in the
// cmd: form for each forward, and a NIC without option ROM.
func TestNetArgs(t *testing.T) {
	got := netArgs([]Forward{
		{GuestAddr: "10.0.2.100:6443", Host: "127.0.0.1:41234"},
		{GuestAddr: "10.0.2.101:80", Host: "127.0.0.1:8080"},
	}, "/opt/a,b/busybox", []int{50001, 50002})
	want := []string{
		"-netdev", "user,id=net0,restrict=on,ipv6=off," +
			"guestfwd=tcp:10.0.2.100:6443-cmd:'/opt/a,,b/busybox' nc 127.0.0.1 50001," +
			"guestfwd=tcp:10.0.2.101:80-cmd:'/opt/a,,b/busybox' nc 127.0.0.1 50002",
		"-device", "virtio-net-pci,netdev=net0,romfile=",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// The default boot has no network device at all.
	args := strings.Join(qemuArgs(Config{Kernel: "k", Command: []string{"true"}}, "initrd"), " ")
	if strings.Contains(args, "-netdev") || strings.Contains(args, "-device") {
		t.Errorf("a VM without forwards has network arguments: %s", args)
	}
}

// TestNetFiles checks how the network modules are found beside the kernel.
func TestNetFiles(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux-6.1.0-56-amd64")
	modules := filepath.Join(dir, "modules-6.1.0-56-amd64")
	write(t, kernel, "")
	write(t, filepath.Join(modules, "failover.ko"), "f")
	write(t, filepath.Join(modules, "virtio_net.ko"), "v")

	if _, err := netFiles(kernel); err == nil || !strings.Contains(err.Error(), "hack/vm-kernels.sh keeps beside it") {
		t.Errorf("without an order file: error %v, want one naming hack/vm-kernels.sh", err)
	}
	write(t, filepath.Join(modules, "order"), "failover.ko\nvirtio_net.ko\n")
	files, err := netFiles(kernel)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
	}
	want := []string{"/lib/modules/6.1.0-56-amd64/failover.ko", "/lib/modules/6.1.0-56-amd64/virtio_net.ko", "/podarmor/net"}
	if fmt.Sprint(paths) != fmt.Sprint(want) {
		t.Errorf("files %v, want %v", paths, want)
	}
	wantConf := "PODARMOR_NET_MODULES='/lib/modules/6.1.0-56-amd64/failover.ko /lib/modules/6.1.0-56-amd64/virtio_net.ko'\nPODARMOR_NET_ADDR='10.0.2.15/24'\n"
	if conf := string(files[len(files)-1].Data); conf != wantConf {
		t.Errorf("/podarmor/net:\n%s\nwant\n%s", conf, wantConf)
	}

	write(t, filepath.Join(modules, "order"), "../evil.ko\n")
	if _, err := netFiles(kernel); err == nil || !strings.Contains(err.Error(), "not a module file name") {
		t.Errorf("a path in the order file: error %v", err)
	}
	if _, err := netFiles(filepath.Join(dir, "bzImage")); err == nil || !strings.Contains(err.Error(), "vmlinux-RELEASE") {
		t.Errorf("a kernel named otherwise: error %v", err)
	}
}

// TestRelay checks the host side of a forward without a VM: a connection to the relay
// reaches the host address, each side's end of writing comes through, and closing the
// relay ends the connections it holds.
func TestRelay(t *testing.T) {
	// An echo server that answers after the client has finished writing.
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
			go func() {
				defer c.Close()
				data, _ := io.ReadAll(c)
				c.Write(bytes.ToUpper(data))
			}()
		}
	}()
	var notes []string
	var notesMu sync.Mutex
	note := func(s string) { notesMu.Lock(); notes = append(notes, s); notesMu.Unlock() }
	relays, err := startRelays([]Forward{
		{GuestAddr: "10.0.2.100:1", Host: ln.Addr().String()},
		{GuestAddr: "10.0.2.100:2", Host: "127.0.0.1:" + strconv.Itoa(closedPort(t))},
	}, note)
	if err != nil {
		t.Fatal(err)
	}
	defer closeRelays(relays)
	relayAddr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(relays[i].port()) }

	c, err := net.Dial("tcp", relayAddr(0))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "half-closed")
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "HALF-CLOSED" {
		t.Errorf("through the relay: %q, %v; want the echo after our end of writing", got, err)
	}
	c.Close()

	c, err = net.Dial("tcp", relayAddr(1))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("a forward to a closed port: read %d, %v; want EOF", n, err)
	}
	c.Close()
	notesMu.Lock()
	if len(notes) != 1 || !strings.Contains(notes[0], "10.0.2.100:2->") {
		t.Errorf("notes %q, want one about the forward to the closed port", notes)
	}
	notesMu.Unlock()

	// A connection left open ends when the relay closes.
	c, err = net.Dial("tcp", relayAddr(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "never finished")
	c.SetDeadline(time.Now().Add(10 * time.Second))
	done := make(chan struct{})
	go func() {
		defer close(done)
		closeRelays(relays)
	}()
	// EOF, or a reset where the relay closed with our bytes unread; not the deadline.
	if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection was still open after the relay closed: %v", err)
	}
	<-done
}

// countingListener listens on a free port of 127.0.0.1 and counts the connections it
// accepts until the test ends.
func countingListener(t *testing.T) (int, *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, &n
}

// closedPort returns a port of 127.0.0.1 that nothing listens on (it did a moment ago).
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func nonce() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func write(t *testing.T, file, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
