package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Handler carries out requests on the enforcer's side. An error is a refusal; its text
// is the Response's Error, which the hook prints and the runtime shows the user.
type Handler interface {
	Handle(ctx context.Context, req Request) (Response, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req Request) (Response, error)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, req Request) (Response, error) { return f(ctx, req) }

// ServerConfig configures Listen.
type ServerConfig struct {
	// Socket is the path to listen on; DefaultSocket when empty. Its directory is
	// created (0755) when missing; the socket itself is 0600.
	Socket string
	// Handler answers requests. Required.
	Handler Handler
	// Timeout bounds one connection, reading the request, handling it and writing the
	// answer; DefaultTimeout when zero.
	Timeout time.Duration
	// AllowedUIDs are the users that may connect; root and the server's own user when
	// empty. Registering a process with a profile is a privileged act.
	AllowedUIDs []uint32
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

func (c *ServerConfig) defaults() error {
	if c.Handler == nil {
		return errors.New("hook server: no handler")
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if len(c.AllowedUIDs) == 0 {
		c.AllowedUIDs = []uint32{0, uint32(os.Geteuid())}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is the enforcer's end of the protocol.
type Server struct {
	cfg  ServerConfig
	ln   *net.UnixListener
	file os.FileInfo // the socket file we created, to remove only that one
	wg   sync.WaitGroup
	once sync.Once
}

// Listen creates the socket. A stale socket left by an enforcer that died is replaced;
// one that a live enforcer answers on is not, and neither is any other kind of file.
func Listen(cfg ServerConfig) (*Server, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		return nil, fmt.Errorf("hook server: %w", err)
	}
	if err := removeStale(cfg.Socket); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("hook server: listen on %s: %w", cfg.Socket, err)
	}
	// Close must not remove the path: a successor may own it by then (see Serve).
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(cfg.Socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("hook server: %w", err)
	}
	info, err := os.Lstat(cfg.Socket)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("hook server: %w", err)
	}
	return &Server{cfg: cfg, ln: ln, file: info}, nil
}

func removeStale(socket string) error {
	info, err := os.Lstat(socket)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hook server: %w", err)
	}
	if info.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("hook server: %s exists and is not a socket", socket)
	}
	if conn, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		conn.Close()
		return fmt.Errorf("hook server: another enforcer is listening on %s", socket)
	}
	if err := os.Remove(socket); err != nil {
		return fmt.Errorf("hook server: remove stale socket: %w", err)
	}
	return nil
}

// Addr is the socket's path.
func (s *Server) Addr() string { return s.cfg.Socket }

// Serve answers connections until ctx ends, then stops accepting, waits for the
// requests in flight (each bounded by the timeout) and removes the socket.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	defer s.close()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				s.wg.Wait()
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.wg.Wait()
			return fmt.Errorf("hook server: accept: %w", err)
		}
		s.wg.Go(func() { s.serve(ctx, conn) })
	}
}

// close stops accepting and removes the socket, if it is still the one Listen made.
func (s *Server) close() {
	s.once.Do(func() {
		s.ln.Close()
		if info, err := os.Lstat(s.cfg.Socket); err == nil && os.SameFile(info, s.file) {
			os.Remove(s.cfg.Socket)
		}
	})
}

// Close stops the server as the end of Serve's context does.
func (s *Server) Close() { s.close() }

func (s *Server) serve(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	log := s.cfg.Logger
	// A request in flight when the server stops is finished, not cut short: the hook
	// waiting for it would otherwise fail a container for nothing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)

	answer := func(resp Response) {
		resp.Version = ProtocolVersion
		if err := writeMessage(conn, resp); err != nil {
			log.Warn("hook: answer lost", "error", err)
		}
	}
	// The request is read before the peer is checked, so that a refused client gets
	// the reason rather than a broken pipe.
	var req Request
	readErr := readMessage(conn, &req)
	uid, err := peerUID(conn)
	if err != nil {
		log.Warn("hook: peer credentials", "error", err)
		answer(Response{Error: "peer credentials: " + err.Error()})
		return
	}
	if !slices.Contains(s.cfg.AllowedUIDs, uid) {
		log.Warn("hook: connection from a user that may not register containers", "uid", uid)
		answer(Response{Error: fmt.Sprintf("uid %d may not register containers", uid)})
		return
	}
	if errors.Is(readErr, io.EOF) {
		// A client that connects and closes at once checks that the enforcer is up.
		log.Debug("hook: connection closed without a request")
		return
	}
	if readErr != nil {
		log.Warn("hook: bad request", "error", readErr)
		answer(Response{Error: "bad request: " + readErr.Error()})
		return
	}
	if err := req.Validate(); err != nil {
		log.Warn("hook: bad request", "error", err)
		answer(Response{Error: err.Error()})
		return
	}
	start := time.Now()
	resp, err := s.cfg.Handler.Handle(ctx, req)
	if err != nil {
		log.Warn("hook: refused", "op", req.Op, "container", req.ContainerID, "pid", req.PID, "error", err)
		answer(Response{Error: err.Error()})
		return
	}
	resp.OK, resp.Error = true, ""
	log.Info("hook: "+string(req.Op), "container", req.ContainerID, "pid", req.PID,
		"profile", resp.Profile, "mntns", resp.MountNamespace, "took", time.Since(start))
	answer(resp)
}

// peerUID is the user of the process at the other end of a unix socket.
func peerUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}
