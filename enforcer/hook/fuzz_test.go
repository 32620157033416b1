package hook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// recorder is a Handler that keeps the requests it gets and answers each with the
// profile its annotations name, or refuses a container whose profile is "refuse".
type recorder struct {
	mu   sync.Mutex
	reqs []Request
}

func (r *recorder) Handle(_ context.Context, req Request) (Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	if p := req.Annotations[AnnotationProfile]; p == "refuse" {
		return Response{}, errors.New("profile refuse is not loaded on this node")
	}
	return Response{Profile: req.Annotations[AnnotationProfile], MountNamespace: 4026532300}, nil
}

// take returns the requests handled since the last call.
func (r *recorder) take() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs = nil
	return out
}

// fuzzServer starts a hook server with a recorder for the whole fuzz run of this
// process (each fuzzing worker has its own).
func fuzzServer(f *testing.F) (string, *recorder) {
	dir, err := os.MkdirTemp("", "hookfuzz")
	if err != nil {
		f.Fatal(err)
	}
	rec := &recorder{}
	s, err := Listen(ServerConfig{Socket: filepath.Join(dir, "s.sock"), Handler: rec, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Errorf("Serve: %v", err)
		}
		os.RemoveAll(dir)
	})
	return s.Addr(), rec
}

// stateSeeds are OCI states as runc and containerd write them to a hook's stdin.
var stateSeeds = []string{
	`{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":4242,"bundle":"/run/c1","annotations":{"podarmor.io/profile":"ap.default.p"}}`,
	`{"ociVersion":"1.0.2","id":"c1","status":"stopped","bundle":"/run/c1"}`,
	`{"ociVersion":"1.0.2-dev","id":"4f1c9b1e0c2d","status":"created","pid":1,"bundle":"/run/containerd/io.containerd.runtime.v2.task/k8s.io/4f1c9b1e0c2d",` +
		`"annotations":{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"main","io.kubernetes.cri.sandbox-name":"web-1",` +
		`"io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.sandbox-uid":"0c6e","io.kubernetes.cri.image-name":"busybox"}}`,
	`{"ociVersion":"1.0.2","id":"c2","status":"creating","pid":7,"annotations":{"podarmor.io/profile":"refuse"}}`,
	`{"ociVersion":"1.0.2","id":"c1","status":"creating"}`,
	`{"id":"../escape","status":"creating","pid":9}`,
	`runc`,
}

// FuzzOCIHookStdin runs the OCI hook on arbitrary stdin against a real enforcer socket.
// Stdin that is no OCI state with an id (and a pid, unless stopped) is an error that
// reaches no enforcer; a state reaches the enforcer as exactly one request carrying its
// id, pid and annotations, and the hook's verdict is the enforcer's.
func FuzzOCIHookStdin(f *testing.F) {
	for _, s := range stateSeeds {
		f.Add([]byte(s))
	}
	socket, rec := fuzzServer(f)
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, stdin []byte) {
		rec.take()
		err := RunOCI(context.Background(), OCIConfig{Client: Client{Socket: socket}, Logger: log}, bytes.NewReader(stdin))
		got := rec.take()
		state, serr := ReadState(bytes.NewReader(stdin))
		if serr != nil {
			if err == nil || len(got) != 0 {
				t.Fatalf("stdin %q is no state (%v), but the hook returned %v after %d requests", stdin, serr, err, len(got))
			}
			return
		}
		want := Request{Version: ProtocolVersion, Op: OpRegister, ContainerID: state.ID, PID: state.Pid,
			Status: string(state.Status), Bundle: state.Bundle, Annotations: state.Annotations}
		if state.Status == specs.StateStopped {
			want.Op, want.PID = OpUnregister, 0
		}
		if _, tooLarge := encodeMessage(want); tooLarge != nil {
			if (err == nil && want.Op == OpRegister) || len(got) != 0 {
				t.Fatalf("state of %d bytes whose request is too large: hook returned %v after %d requests", len(stdin), err, len(got))
			}
			return
		}
		if len(got) != 1 {
			t.Fatalf("state %q: %d requests reached the enforcer, want 1", stdin, len(got))
		}
		if !sameRequest(got[0], want) {
			t.Fatalf("state %q reached the enforcer as %+v, want %+v", stdin, got[0], want)
		}
		refused := want.Op == OpRegister && state.Annotations[AnnotationProfile] == "refuse"
		if refused != (err != nil) {
			t.Fatalf("state %q: hook error %v, enforcer refused: %v", stdin, err, refused)
		}
	})
}

// FuzzOCIHookUnprotected runs the hook set to allow containers when no enforcer
// answers: whatever the state's id, the record it writes stays in its directory.
func FuzzOCIHookUnprotected(f *testing.F) {
	for _, s := range stateSeeds {
		f.Add([]byte(s))
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, stdin []byte) {
		root := t.TempDir()
		dir := filepath.Join(root, "unprotected")
		err := RunOCI(context.Background(), OCIConfig{Client: Client{Socket: filepath.Join(root, "none.sock")}, OnUnavailable: Allow,
			UnprotectedDir: dir, Logger: log}, bytes.NewReader(stdin))
		state, serr := ReadState(bytes.NewReader(stdin))
		tooLarge := false
		if serr == nil && state.Status != specs.StateStopped {
			_, e := encodeMessage(Request{Version: ProtocolVersion, Op: OpRegister, ContainerID: state.ID, PID: state.Pid,
				Status: string(state.Status), Bundle: state.Bundle, Annotations: state.Annotations})
			tooLarge = e != nil // refused, not let through
		}
		if (serr != nil || tooLarge) != (err != nil) {
			t.Fatalf("stdin %q: hook error %v, state error %v", stdin, err, serr)
		}
		entries, rerr := os.ReadDir(root)
		if rerr != nil {
			t.Fatal(rerr)
		}
		for _, e := range entries {
			if e.Name() != "unprotected" {
				t.Fatalf("stdin %q: the hook wrote %s outside its directory", stdin, e.Name())
			}
		}
		recs, files, rerr := ReadUnprotected(dir)
		if rerr != nil {
			t.Fatalf("stdin %q: %v", stdin, rerr)
		}
		for _, file := range files {
			if filepath.Dir(file) != dir {
				t.Fatalf("record %s outside %s", file, dir)
			}
		}
		if serr != nil || tooLarge || state.Status == specs.StateStopped {
			if len(recs) != 0 {
				t.Fatalf("stdin %q: records %+v for a container that was not let through", stdin, recs)
			}
			return
		}
		if len(recs) > 1 || (len(recs) == 1 && (recs[0].ContainerID != state.ID || recs[0].PID != state.Pid)) {
			t.Fatalf("stdin %q: records %+v, want at most one of %s", stdin, recs, state.ID)
		}
	})
}

// FuzzServerRequest sends arbitrary bytes to the enforcer's socket, as any root process
// on the node can. The server answers every non-empty message with one Response line:
// ok only when the message's first line is a valid request, which then reached the
// handler unchanged, and otherwise a refusal that says why. It never handles a request
// twice, and it keeps serving.
func FuzzServerRequest(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"op":"register","containerID":"c1","pid":4242,"status":"creating","bundle":"/run/c1","annotations":{"podarmor.io/profile":"ap.default.p"}}` + "\n",
		`{"version":1,"op":"unregister","containerID":"c1","status":"stopped"}` + "\n",
		`{"version":2,"op":"register","containerID":"c1","pid":1}` + "\n",
		`{"version":1,"op":"register","containerID":"c1","pid":0}` + "\n",
		`{"version":1,"op":"freeze","containerID":"c1"}` + "\n",
		`{"version":1,"op":"register","containerID":"c1","pid":1,"annotations":{"podarmor.io/profile":"refuse"}}` + "\n",
		`{"version":1,"op":"register","containerID":"c1","pid":1}`,
		"{\"version\":1}\n{\"version\":1,\"op\":\"register\",\"containerID\":\"c1\",\"pid\":1}\n",
		"\n",
		"",
	} {
		f.Add([]byte(s))
	}
	socket, rec := fuzzServer(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		rec.take()
		conn, err := net.Dial("unix", socket)
		if err != nil {
			t.Fatalf("the server stopped answering: %v", err)
		}
		defer conn.Close()
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		conn.(*net.UnixConn).CloseWrite()
		var resp Response
		rerr := readMessage(conn, &resp)
		got := rec.take()
		if len(msg) == 0 {
			if rerr == nil || len(got) != 0 {
				t.Fatalf("an empty connection got %+v and reached the handler %d times", resp, len(got))
			}
			return
		}
		if rerr != nil {
			t.Fatalf("message %q: no answer: %v", msg, rerr)
		}
		if resp.Version != ProtocolVersion {
			t.Fatalf("message %q: answer in version %d", msg, resp.Version)
		}
		first, _, complete := bytes.Cut(msg, []byte("\n"))
		var want Request
		valid := complete && json.Unmarshal(first, &want) == nil && want.Validate() == nil
		switch {
		case len(got) > 1:
			t.Fatalf("message %q reached the handler %d times", msg, len(got))
		case !valid && len(got) != 0:
			t.Fatalf("message %q is no valid request but reached the handler as %+v", msg, got[0])
		case !valid && (resp.OK || resp.Error == ""):
			t.Fatalf("message %q is no valid request but was answered %+v", msg, resp)
		case valid && (len(got) != 1 || !sameRequest(got[0], want)):
			t.Fatalf("message %q reached the handler as %+v, want %+v", msg, got, want)
		case valid && resp.OK != (want.Annotations[AnnotationProfile] != "refuse"):
			t.Fatalf("message %q: answer %+v is not the handler's", msg, resp)
		case !resp.OK && !strings.Contains(resp.Error, " "):
			t.Fatalf("message %q: refusal %q says nothing", msg, resp.Error)
		}
	})
}

func sameRequest(a, b Request) bool {
	return fmt.Sprint(a.Version, a.Op, a.ContainerID, a.PID, a.Status, a.Bundle) == fmt.Sprint(b.Version, b.Op, b.ContainerID, b.PID, b.Status, b.Bundle) &&
		maps.Equal(a.Annotations, b.Annotations)
}
