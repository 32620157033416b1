package hook

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunOCI(t *testing.T) {
	const creating = `{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":4242,"bundle":"/run/c1",
		"annotations":{"podarmor.io/profile":"ap.default.p"}}`
	const stopped = `{"ociVersion":"1.0.2","id":"c1","status":"stopped","bundle":"/run/c1"}`
	ok := HandlerFunc(func(context.Context, Request) (Response, error) { return Response{Profile: "ap.default.p"}, nil })
	no := HandlerFunc(func(context.Context, Request) (Response, error) { return Response{}, errors.New("profile not loaded") })
	tests := map[string]struct {
		state      string
		handler    Handler // nil: no enforcer listening
		on         OnUnavailable
		wantErr    string
		wantOp     Op
		unprotects bool
	}{
		"createRuntime registers the container": {
			state: creating, handler: ok, wantOp: OpRegister,
		},
		"poststop unregisters it": {
			state: stopped, handler: ok, wantOp: OpUnregister,
		},
		"without the enforcer the container is refused by default": {
			state: creating, wantErr: "container c1 not started: the podarmor enforcer at",
		},
		"without the enforcer the container runs, recorded, when the hook is set to allow": {
			state: creating, on: Allow, unprotects: true,
		},
		"a refusal by the enforcer stops the container even when the hook is set to allow": {
			state: creating, handler: no, on: Allow, wantErr: "refused container c1: profile not loaded",
		},
		"poststop without the enforcer does not fail the runtime": {
			state: stopped,
		},
		"a state without a pid is an error": {
			state: `{"ociVersion":"1.0.2","id":"c1","status":"creating"}`, handler: ok, wantErr: "has no pid",
		},
		"a state whose request is too large to send is refused even when the hook is set to allow": {
			// 200,000 '<' fit on stdin; JSON escapes each as \u003c, six bytes.
			state:   `{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":4242,"annotations":{"x":"` + strings.Repeat("<", 200000) + `"}}`,
			handler: ok, on: Allow, wantErr: "container c1: request: message of",
		},
		"stdin that is no state is an error": {
			state: `runc`, handler: ok, wantErr: "the container state on stdin",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			socket := socketPath(t)
			var got []Request
			if tc.handler != nil {
				serve(t, ServerConfig{Socket: socket, Handler: HandlerFunc(func(ctx context.Context, r Request) (Response, error) {
					got = append(got, r)
					return tc.handler.Handle(ctx, r)
				})})
			}
			dir := filepath.Join(t.TempDir(), "unprotected")
			err := RunOCI(context.Background(), OCIConfig{Client: Client{Socket: socket}, OnUnavailable: tc.on, UnprotectedDir: dir,
				Logger: slog.New(slog.DiscardHandler)},
				strings.NewReader(tc.state))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.wantOp != "" && (len(got) != 1 || got[0].Op != tc.wantOp || got[0].ContainerID != "c1") {
				t.Errorf("requests %+v, want one %s of c1", got, tc.wantOp)
			}
			recs, files, err := ReadUnprotected(dir)
			if err != nil {
				t.Fatal(err)
			}
			if tc.unprotects {
				if len(recs) != 1 || recs[0].ContainerID != "c1" || recs[0].PID != 4242 || recs[0].Annotations[AnnotationProfile] != "ap.default.p" {
					t.Errorf("unprotected records %+v, want c1 with its pid and annotations", recs)
				}
				if len(files) == 1 && filepath.Base(files[0]) != "c1.json" {
					t.Errorf("record file %s", files[0])
				}
			} else if len(recs) != 0 {
				t.Errorf("unexpected unprotected records %+v", recs)
			}
		})
	}
}

func TestParseOnUnavailable(t *testing.T) {
	for in, want := range map[string]OnUnavailable{"refuse": Refuse, "Allow": Allow} {
		if got, err := ParseOnUnavailable(in); err != nil || got != want {
			t.Errorf("%q: %v, %v", in, got, err)
		}
	}
	if _, err := ParseOnUnavailable("ignore"); err == nil {
		t.Error("ignore accepted")
	}
}

func TestRecordUnprotectedRefusesPaths(t *testing.T) {
	dir := t.TempDir()
	if err := recordUnprotected(dir, Request{ContainerID: "../x"}); err == nil {
		t.Error("a container ID with a path was written")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "x.json")); err == nil {
		t.Error("written outside the directory")
	}
}
