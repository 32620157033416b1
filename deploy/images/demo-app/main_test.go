package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(newHandler("web-1"))
	defer srv.Close()
	tests := map[string]struct {
		method, path string
		status       int
		body         string // in the body
		contentType  string
	}{
		"the page names the pod":         {"GET", "/", 200, "Served by pod <code>web-1</code>", "text/html; charset=utf-8"},
		"the health check says ok":       {"GET", "/healthz", 200, "ok\n", "text/plain; charset=utf-8"},
		"another path is not found":      {"GET", "/admin", 404, "not found", ""},
		"a POST to the page is refused":  {"POST", "/", 405, "", ""},
		"a POST to the health check too": {"POST", "/healthz", 405, "", ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.body) {
				t.Errorf("%s %s: %d %q; want %d with %q", tc.method, tc.path, resp.StatusCode, body, tc.status, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); tc.contentType != "" && ct != tc.contentType {
				t.Errorf("%s %s: Content-Type %q, want %q", tc.method, tc.path, ct, tc.contentType)
			}
		})
	}
}

func TestServeStopsWhenItsContextEnds(t *testing.T) {
	// A free loopback port, released for serve to take.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, addr, newHandler("h"), slog.New(slog.DiscardHandler)) }()

	var resp *http.Response
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err = http.Get("http://" + addr + "/healthz"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not answer on %s: %v", addr, err)
		}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %s", resp.Status)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after its context ended: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
}

func TestServeReportsAnAddressItCannotListenOn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = serve(context.Background(), l.Addr().String(), newHandler("h"), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("serve on a taken port: %v, want address already in use", err)
	}
}
