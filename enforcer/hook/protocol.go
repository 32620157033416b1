// Package hook is the protocol between the OCI runtime hook (`podarmor-enforcer
// oci-hook`) and the node enforcer: how a container is registered with its profile
// before its own program runs a single instruction.
//
// # Why a synchronous hook
//
// The BPF enforcer confines a container by the inode of its mount namespace. That
// namespace exists only once the runtime has created the container, and the container's
// program must not start before the enforcer knows it. The OCI runtime (runc, crun) runs
// createRuntime hooks after it has created the namespaces and before it executes the
// container's program, and waits for each hook to exit; a hook that exits non-zero makes
// the runtime abort the container. So the hook asks the enforcer to register the
// container and exits only when the enforcer has answered: a container the hook let
// through is registered, and one it could not register never runs, unless the node is
// configured to let it run unprotected (OnUnavailable).
//
// # The protocol
//
// The enforcer listens on a unix stream socket (DefaultSocket), owned by root with mode
// 0600, and accepts connections only from root (checked with SO_PEERCRED). A client
// sends one Request as a JSON object followed by a newline, and the enforcer answers with
// one Response the same way and closes the connection:
//
//	-> {"version":1,"op":"register","containerID":"c1","pid":4242,"status":"creating",
//	    "bundle":"/run/c1","annotations":{"podarmor.io/profile":"ap.default.p"}}
//	<- {"version":1,"ok":true,"profile":"ap.default.p","mountNamespace":4026532300}
//
//	<- {"version":1,"ok":false,"error":"profile ap.default.q is not loaded on this node"}
//
// "ok" with an empty profile means the container is not sandboxed and was left alone.
// A message is at most MaxMessage bytes. Both sides bound the exchange with deadlines
// (DefaultTimeout). Version is ProtocolVersion; the enforcer refuses another.
//
// Op "unregister" (sent by the same hook at poststop, where the state's status is
// "stopped") forgets a container's registration; its pid is 0 by then, so the enforcer
// keeps the mount namespace of each registered container by ID.
package hook

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// ProtocolVersion is the version of Request and Response this package speaks.
const ProtocolVersion = 1

// DefaultSocket is where the enforcer listens.
const DefaultSocket = "/run/podarmor/enforcer.sock"

// DefaultTimeout bounds one exchange: connecting, sending, the enforcer's work and the
// answer. Registering is a map update and takes microseconds; the bound is for an
// enforcer that hangs, and it stays well below the runtime's own hook timeout.
const DefaultTimeout = 10 * time.Second

// MaxMessage bounds a request or response. The OCI annotations of a Kubernetes container
// are a few kilobytes.
const MaxMessage = 1 << 20

// The annotation an OCI spec can carry to name a container's profile directly (outside
// Kubernetes, where the enforcer maps containers to pods and pods to profiles).
const AnnotationProfile = "podarmor.io/profile"

// Op is what a request asks.
type Op string

// The operations.
const (
	// OpRegister confines the container's mount namespace with its profile, effective
	// from the next exec in it (the container's own program).
	OpRegister Op = "register"
	// OpUnregister forgets a stopped container.
	OpUnregister Op = "unregister"
)

// Request is what the hook sends: the container's OCI state, and what to do.
type Request struct {
	Version int `json:"version"`
	Op      Op  `json:"op"`
	// ContainerID is the runtime's ID of the container. Required.
	ContainerID string `json:"containerID"`
	// PID is the container's init process in the enforcer's PID namespace (the node's),
	// whose /proc/<pid>/ns/mnt is the namespace to register. Required to register.
	PID int `json:"pid,omitempty"`
	// Status is the OCI state's status: "creating" at createRuntime, "stopped" at
	// poststop.
	Status string `json:"status,omitempty"`
	// Bundle is the container's bundle directory.
	Bundle string `json:"bundle,omitempty"`
	// Annotations are the OCI spec's annotations: the CRI's pod and container names, or
	// AnnotationProfile.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Validate checks what every request needs.
func (r *Request) Validate() error {
	if r.Version != ProtocolVersion {
		return fmt.Errorf("protocol version %d, this enforcer speaks %d", r.Version, ProtocolVersion)
	}
	if r.ContainerID == "" {
		return errors.New("no container ID")
	}
	switch r.Op {
	case OpRegister:
		if r.PID <= 0 {
			return fmt.Errorf("register container %s: no pid", r.ContainerID)
		}
	case OpUnregister:
	default:
		return fmt.Errorf("container %s: unknown op %q", r.ContainerID, r.Op)
	}
	return nil
}

// Response is the enforcer's answer.
type Response struct {
	Version int  `json:"version"`
	OK      bool `json:"ok"`
	// Error says why the enforcer refused; set when OK is false.
	Error string `json:"error,omitempty"`
	// Profile is the profile the container was registered with; empty when the container
	// is not sandboxed.
	Profile string `json:"profile,omitempty"`
	// MountNamespace is the inode of the registered mount namespace.
	MountNamespace uint32 `json:"mountNamespace,omitempty"`
}

// writeMessage writes v as one line of JSON.
func writeMessage(w io.Writer, v any) error {
	b, err := encodeMessage(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// encodeMessage is v as one line of JSON, refused when longer than MaxMessage.
func encodeMessage(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b) >= MaxMessage {
		return nil, fmt.Errorf("message of %d bytes, more than %d", len(b), MaxMessage)
	}
	return append(b, '\n'), nil
}

// readMessage reads one line of JSON into v, refusing lines longer than MaxMessage.
// Unknown fields are ignored, so that a later minor addition does not break an older
// peer; what changes meaning changes ProtocolVersion.
func readMessage(r io.Reader, v any) error {
	br := bufio.NewReaderSize(io.LimitReader(r, MaxMessage), 4096)
	line, err := br.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		// ReadSlice's buffer is small; grow into a copy for a long line.
		more, rerr := br.ReadBytes('\n')
		line, err = append(append([]byte(nil), line...), more...), rerr
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return fmt.Errorf("message cut off after %d bytes (the limit is %d)", len(line), MaxMessage)
		}
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode message: %w", err)
	}
	return nil
}
