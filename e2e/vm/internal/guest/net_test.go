//go:build vmguest

package guest

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The host's TestForwards boots the VM with forwards and names, with these flags, what
// must be reachable and what must not; TestGoTestInGuest passes none of them, and then
// the VM must have no network at all.
var (
	fetchURLs   = flag.String("fetch", "", "comma-separated URLs, through forwards, that must answer with -body")
	fetchBody   = flag.String("body", "", "the body every -fetch URL answers with")
	closedAddrs = flag.String("closed", "", "comma-separated forwarded addresses whose host port has no listener")
	unreachable = flag.String("unreachable", "", "comma-separated addresses the guest must not reach")
)

// Requests that TestNetwork makes to each -fetch URL, which the host counts.
const (
	sequentialFetches = 3
	concurrentFetches = 4
	wgetFetches       = 1
)

func TestNetwork(t *testing.T) {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, iface := range ifaces {
		names = append(names, iface.Name)
	}
	if *fetchURLs == "" {
		if !slices.Equal(names, []string{"lo"}) {
			t.Errorf("network interfaces %v in a VM without forwards, want only lo", names)
		}
		return
	}

	t.Run("eth0 has the guest's address and there is no default route", func(t *testing.T) {
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatalf("%v (interfaces: %v)", err, names)
		}
		addrs, err := eth0.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(addrs, func(a net.Addr) bool { return a.String() == "10.0.2.15/24" }) {
			t.Errorf("eth0 has %v, want 10.0.2.15/24", addrs)
		}
		for _, route := range routes(t) {
			if route.dest == "00000000" {
				t.Errorf("a default route via %s: the guest should reach only its forwards", route.iface)
			}
		}
	})

	for _, url := range strings.Split(*fetchURLs, ",") {
		t.Run("every new connection to "+url+" reaches the host", func(t *testing.T) {
			// A connection of its own for each request: each goes through a guestfwd
			// rule of its own.
			client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for range sequentialFetches {
				fetch(t, client, url)
			}
			var wg sync.WaitGroup
			for range concurrentFetches {
				wg.Go(func() { fetch(t, client, url) })
			}
			wg.Wait()
			// Not wget -T: busybox 1.35's static wget dies of SIGSEGV with it.
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "wget", "-q", "-O", "-", url).CombinedOutput()
			if err != nil || string(out) != *fetchBody {
				t.Errorf("busybox wget %s: %v, %q; want %q", url, err, out, *fetchBody)
			}
		})
	}

	t.Run("a forward whose host port has no listener accepts and closes at once", func(t *testing.T) {
		for _, addr := range list(*closedAddrs) {
			conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				t.Errorf("dial %s: %v", addr, err)
				continue
			}
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			n, err := conn.Read(make([]byte, 1))
			if n != 0 || !errors.Is(err, io.EOF) {
				t.Errorf("read from %s: %d bytes, %v; want EOF", addr, n, err)
			}
			conn.Close()
		}
	})

	t.Run("what is not forwarded is unreachable", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, addr := range list(*unreachable) {
			wg.Go(func() {
				start := time.Now()
				conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err == nil {
					conn.Close()
					t.Errorf("connected to %s, which is not forwarded", addr)
					return
				}
				t.Logf("%s: %v after %s", addr, err, time.Since(start).Round(time.Millisecond))
			})
		}
		wg.Wait()
	})
}

func fetch(t *testing.T, client *http.Client, url string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != *fetchBody {
		t.Errorf("GET %s: %s, %q, %v; want 200 and %q", url, resp.Status, body, err, *fetchBody)
	}
}

func list(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

type route struct{ iface, dest string }

// routes reads the IPv4 routing table from /proc/net/route.
func routes(t *testing.T) []route {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rs []route
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 {
			rs = append(rs, route{iface: fields[0], dest: fields[1]})
		}
	}
	if len(rs) == 0 {
		t.Errorf("no IPv4 routes at all in /proc/net/route")
	}
	return rs
}
