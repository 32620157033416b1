package hook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// socketPath is a socket path short enough for sun_path (108 bytes), which t.TempDir()
// with a long test name is not.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hook")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

// serve starts a server with handler h and returns its socket; it stops with the test.
func serve(t *testing.T, cfg ServerConfig) string {
	t.Helper()
	if cfg.Socket == "" {
		cfg.Socket = socketPath(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return cfg.Socket
}

func TestExchange(t *testing.T) {
	registered := Request{Op: OpRegister, ContainerID: "c1", PID: 42, Status: "creating", Bundle: "/b",
		Annotations: map[string]string{AnnotationProfile: "ap.default.p"}}
	tests := map[string]struct {
		handler  HandlerFunc
		timeout  time.Duration
		req      Request
		want     Response
		errCheck func(error) bool
		errText  string
	}{
		"a registration reaches the handler whole and its answer comes back": {
			handler: func(_ context.Context, r Request) (Response, error) {
				if fmt.Sprint(r) != fmt.Sprint(Request{Version: ProtocolVersion, Op: OpRegister, ContainerID: "c1", PID: 42,
					Status: "creating", Bundle: "/b", Annotations: map[string]string{AnnotationProfile: "ap.default.p"}}) {
					return Response{}, fmt.Errorf("handler got %+v", r)
				}
				return Response{Profile: "ap.default.p", MountNamespace: 4026532300}, nil
			},
			req:  registered,
			want: Response{Version: ProtocolVersion, OK: true, Profile: "ap.default.p", MountNamespace: 4026532300},
		},
		"a container that is not sandboxed is answered ok without a profile": {
			handler: func(context.Context, Request) (Response, error) { return Response{}, nil },
			req:     Request{Op: OpRegister, ContainerID: "c2", PID: 7},
			want:    Response{Version: ProtocolVersion, OK: true},
		},
		"a refusal carries the enforcer's reason": {
			handler: func(context.Context, Request) (Response, error) {
				return Response{}, errors.New("profile ap.default.q is not loaded on this node")
			},
			req:      registered,
			errCheck: func(err error) bool { var r *RefusedError; return errors.As(err, &r) },
			errText:  "refused container c1: profile ap.default.q is not loaded on this node",
		},
		"an enforcer that does not answer in time is unavailable": {
			handler: func(ctx context.Context, _ Request) (Response, error) {
				<-ctx.Done()
				return Response{}, ctx.Err()
			},
			timeout:  200 * time.Millisecond,
			req:      registered,
			errCheck: IsUnavailable,
			errText:  "no answer within 200ms",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			socket := serve(t, ServerConfig{Handler: tc.handler, Timeout: time.Second})
			resp, err := Client{Socket: socket, Timeout: tc.timeout}.Do(context.Background(), tc.req)
			if tc.errCheck != nil {
				if err == nil || !tc.errCheck(err) || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("error %v (%T), want one with %q", err, err, tc.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp != tc.want {
				t.Errorf("response %+v, want %+v", resp, tc.want)
			}
		})
	}
}

func TestClientWithoutEnforcer(t *testing.T) {
	_, err := Client{Socket: socketPath(t)}.Do(context.Background(), Request{Op: OpRegister, ContainerID: "c", PID: 1})
	if !IsUnavailable(err) || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("error %v, want unavailable: no such file", err)
	}
}

func TestClientRefusesInvalidRequests(t *testing.T) {
	tests := map[string]Request{
		"a registration without a pid":  {Op: OpRegister, ContainerID: "c"},
		"a request without a container": {Op: OpRegister, PID: 1},
		"an unknown op":                 {Op: "pause", ContainerID: "c", PID: 1},
	}
	for name, req := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := (Client{Socket: socketPath(t)}).Do(context.Background(), req); err == nil || IsUnavailable(err) {
				t.Errorf("error %v, want a validation error", err)
			}
		})
	}
}

// raw sends text on a fresh connection and returns the answer line.
func raw(t *testing.T, socket, text string) string {
	t.Helper()
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(text)); err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := readMessage(conn, &resp); err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if resp.OK {
		t.Fatalf("ok for %q", text)
	}
	return resp.Error
}

func TestServerRefusesBadRequests(t *testing.T) {
	called := false
	socket := serve(t, ServerConfig{Handler: HandlerFunc(func(context.Context, Request) (Response, error) {
		called = true
		return Response{}, nil
	})})
	tests := map[string]struct{ text, want string }{
		"not JSON":               {"hello\n", "bad request"},
		"another version":        {`{"version":2,"op":"register","containerID":"c","pid":1}` + "\n", "protocol version 2"},
		"a registration, no pid": {`{"version":1,"op":"register","containerID":"c"}` + "\n", "no pid"},
		"a message over the limit": {
			`{"version":1,"op":"register","containerID":"` + strings.Repeat("x", MaxMessage) + `"}` + "\n",
			"cut off",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := raw(t, socket, tc.text); !strings.Contains(got, tc.want) {
				t.Errorf("error %q, want %q", got, tc.want)
			}
		})
	}
	if called {
		t.Error("the handler was called for a bad request")
	}
}

func TestServerRefusesOtherUsers(t *testing.T) {
	socket := serve(t, ServerConfig{
		AllowedUIDs: []uint32{54321},
		Handler: HandlerFunc(func(context.Context, Request) (Response, error) {
			t.Error("handler called")
			return Response{}, nil
		}),
	})
	_, err := Client{Socket: socket}.Do(context.Background(), Request{Op: OpRegister, ContainerID: "c", PID: 1})
	want := fmt.Sprintf("uid %d may not register containers", os.Geteuid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

func TestServerTimesOutSilentClients(t *testing.T) {
	socket := serve(t, ServerConfig{Timeout: 100 * time.Millisecond,
		Handler: HandlerFunc(func(context.Context, Request) (Response, error) { return Response{}, nil })})
	conn, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	var resp Response
	err = readMessage(conn, &resp)
	if err == nil && resp.OK {
		t.Fatalf("a silent client got ok")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the server kept a silent connection for %s", d)
	}
}

func TestListen(t *testing.T) {
	handler := HandlerFunc(func(context.Context, Request) (Response, error) { return Response{}, nil })
	t.Run("the socket is private to its owner", func(t *testing.T) {
		socket := serve(t, ServerConfig{Handler: handler})
		info, err := os.Stat(socket)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", info.Mode().Perm())
		}
	})
	t.Run("a stale socket of a dead enforcer is replaced", func(t *testing.T) {
		socket := socketPath(t)
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
		serve(t, ServerConfig{Socket: socket, Handler: handler})
		if _, err := (Client{Socket: socket}).Do(context.Background(), Request{Op: OpRegister, ContainerID: "c", PID: 1}); err != nil {
			t.Error(err)
		}
	})
	t.Run("a live enforcer's socket is left alone", func(t *testing.T) {
		socket := serve(t, ServerConfig{Handler: handler})
		if _, err := Listen(ServerConfig{Socket: socket, Handler: handler}); err == nil || !strings.Contains(err.Error(), "another enforcer") {
			t.Errorf("error %v, want another enforcer", err)
		}
	})
	t.Run("a file that is no socket is left alone", func(t *testing.T) {
		socket := socketPath(t)
		if err := os.WriteFile(socket, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(ServerConfig{Socket: socket, Handler: handler}); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("error %v, want not a socket", err)
		}
	})
	t.Run("stopping removes the socket after the requests in flight", func(t *testing.T) {
		socket := socketPath(t)
		entered := make(chan struct{})
		s, err := Listen(ServerConfig{Socket: socket, Logger: slog.New(slog.DiscardHandler), Handler: HandlerFunc(func(context.Context, Request) (Response, error) {
			close(entered)
			time.Sleep(100 * time.Millisecond)
			return Response{Profile: "p"}, nil
		})})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		var wg sync.WaitGroup
		var resp Response
		var reqErr error
		wg.Go(func() {
			resp, reqErr = Client{Socket: socket}.Do(context.Background(), Request{Op: OpRegister, ContainerID: "c", PID: 1})
		})
		<-entered
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if reqErr != nil || resp.Profile != "p" {
			t.Errorf("the request in flight got %+v, %v", resp, reqErr)
		}
		if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket still there: %v", err)
		}
	})
}
