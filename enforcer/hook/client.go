package hook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// UnavailableError is the error of a request that never got an answer: the enforcer's
// socket is missing or refuses connections, or the enforcer did not answer within the
// timeout. Whether a container may then run unprotected is the hook's setting
// (OnUnavailable); an explicit refusal by the enforcer (RefusedError) never lets it run.
type UnavailableError struct {
	Socket string
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("the podarmor enforcer at %s is unavailable: %v", e.Socket, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// RefusedError is the enforcer's refusal of a request, with its reason.
type RefusedError struct {
	ContainerID string
	Message     string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the podarmor enforcer refused container %s: %s", e.ContainerID, e.Message)
}

// Client sends requests to the enforcer. The zero value uses DefaultSocket and
// DefaultTimeout.
type Client struct {
	// Socket is the enforcer's unix socket.
	Socket string
	// Timeout bounds one request, from connecting to the answer.
	Timeout time.Duration
}

// Do sends req (its Version is filled in) and waits for the answer. The error is an
// *UnavailableError when there was no answer, a *RefusedError when the enforcer
// answered no.
func (c Client) Do(ctx context.Context, req Request) (Response, error) {
	socket, timeout := c.Socket, c.Timeout
	if socket == "" {
		socket = DefaultSocket
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	req.Version = ProtocolVersion
	if err := req.Validate(); err != nil {
		return Response{}, err
	}
	// A request too large to send is the request's fault, not the enforcer's: it is an
	// error, never an UnavailableError that a hook set to allow would let through. (JSON
	// escaping can make a state that fits on stdin six times larger.)
	msg, err := encodeMessage(req)
	if err != nil {
		return Response{}, fmt.Errorf("container %s: request: %w", req.ContainerID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	unavailable := func(err error) error { return &UnavailableError{Socket: socket, Err: err} }

	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return Response{}, unavailable(err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return Response{}, unavailable(err)
	}
	// Closing the connection when ctx ends wakes a blocked read at once, also when ctx
	// is cancelled before its deadline.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if _, err := conn.Write(msg); err != nil {
		return Response{}, unavailable(fmt.Errorf("send request: %w", err))
	}
	var resp Response
	if err := readMessage(conn, &resp); err != nil {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("no answer within %s", timeout)
		}
		return Response{}, unavailable(fmt.Errorf("read answer: %w", err))
	}
	if resp.Version != ProtocolVersion {
		return resp, fmt.Errorf("the enforcer answered in protocol version %d, want %d", resp.Version, ProtocolVersion)
	}
	if !resp.OK {
		msg := resp.Error
		if msg == "" {
			msg = "no reason given"
		}
		return resp, &RefusedError{ContainerID: req.ContainerID, Message: msg}
	}
	return resp, nil
}

// IsUnavailable reports whether err means the enforcer could not be reached or did not
// answer.
func IsUnavailable(err error) bool {
	var u *UnavailableError
	return errors.As(err, &u)
}
