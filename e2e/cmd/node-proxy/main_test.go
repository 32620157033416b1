package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

// startProxy serves p on a loopback port and returns its address.
func startProxy(t *testing.T, p *proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// echoServer answers every line with "echo: LINE" until the client ends its writing.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "echo: %s\n", sc.Text())
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// connect sends CONNECT target to the proxy with extra bytes right behind the request
// (as a client that does not wait for the answer would) and returns the status line and
// the connection, positioned after the answer's header.
func connect(t *testing.T, proxyAddr, target, extra string) (string, *bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, extra)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("read the proxy's answer: %v", err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the proxy's header: %v", err)
		}
		if line == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(status), br, c
}

func testProxy(allowed []netip.Prefix, local ...netip.Addr) *proxy {
	return &proxy{
		allowed:    allowed,
		localAddrs: func() ([]netip.Addr, error) { return local, nil },
		log:        log.New(io.Discard, "", 0),
		resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			if host == "podarmor-node" {
				return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
			}
			return nil, errors.New("no such host")
		},
	}
}

func TestConnectAllowed(t *testing.T) {
	echo := echoServer(t)
	_, port, _ := net.SplitHostPort(echo)
	for name, p := range map[string]*proxy{
		"prefix":        testProxy([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}),
		"node address":  testProxy(nil, netip.MustParseAddr("127.0.0.1")),
		"resolved name": testProxy([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
	} {
		t.Run(name, func(t *testing.T) {
			target := echo
			if name == "resolved name" {
				target = "podarmor-node:" + port
			}
			status, br, c := connect(t, startProxy(t, p), target, "first\n")
			if status != "HTTP/1.1 200 Connection established" {
				t.Fatalf("CONNECT %s: %q, want 200", target, status)
			}
			fmt.Fprintf(c, "second\n")
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			if want := "echo: first\necho: second\n"; string(got) != want {
				t.Errorf("through the proxy: %q, want %q", got, want)
			}
		})
	}
}

func TestConnectRefused(t *testing.T) {
	echo := echoServer(t)
	p := testProxy([]netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}, netip.MustParseAddr("10.0.2.15"))
	addr := startProxy(t, p)
	for _, target := range []string{
		echo,                // loopback: not allowed here
		"10.0.2.100:6443",   // the host's forward address
		"10.0.2.2:80",       // QEMU's gateway
		"10.245.0.1:80",     // beside the pod CIDR
		"unknown-host:80",   // cannot resolve
		"10.244.0.5",        // no port
		"podarmor-node:123", // resolves to loopback here
	} {
		status, _, _ := connect(t, addr, target, "")
		if !strings.Contains(status, " 403 ") {
			t.Errorf("CONNECT %s: %q, want 403", target, status)
		}
	}
	// net/http itself refuses a malformed port before the proxy sees the request.
	if status, _, _ := connect(t, addr, "10.244.0.5:nope", ""); !strings.Contains(status, " 400 ") {
		t.Errorf("CONNECT with a bad port: %q, want 400", status)
	}
}

func TestOnlyConnect(t *testing.T) {
	p := testProxy([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	resp, err := http.Get("http://" + startProxy(t, p) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %s, want 405", resp.Status)
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes(" 10.244.0.0/24, 10.96.0.1/16 ,")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.244.0.0/24 10.96.0.0/16]" {
		t.Errorf("parsePrefixes: %v", got)
	}
	if _, err := parsePrefixes("10.244.0.0"); err == nil || !strings.Contains(err.Error(), `"10.244.0.0"`) {
		t.Errorf("parsePrefixes(no bits): %v, want an error naming it", err)
	}
}
