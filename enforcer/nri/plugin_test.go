package nri

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	validator "github.com/containerd/nri/plugins/default-validator/builtin"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// These tests run the plugin against NRI's runtime side, the adaptation library that
// containerd and CRI-O embed, listening on a socket in a temporary directory.

func TestMain(m *testing.M) {
	// The adaptation logs through NRI's global logger; keep its chatter out of test
	// output but not its warnings.
	nrilog.Set(quietLogger{})
	os.Exit(m.Run())
}

const hookPath = "/opt/podarmor/bin/podarmor-enforcer"

var (
	sandboxed = &api.PodSandbox{Id: "pod-a", Name: "web", Namespace: "shop", Uid: "uid-a",
		Labels: map[string]string{"app": "web", "podarmor.io/profile": "ap.shop.web"}}
	plain = &api.PodSandbox{Id: "pod-b", Name: "coredns", Namespace: "kube-system", Uid: "uid-b",
		Labels: map[string]string{"k8s-app": "kube-dns"}}
)

func TestCreateContainerInjectsTheHookIntoSandboxedPodsOnly(t *testing.T) {
	rt := startRuntime(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nil)
	startPlugin(t, rt.socket, nil)
	rt.waitPlugins(t, 1)

	// What the runtime gets back when no plugin adjusts anything.
	empty := noPluginReply(t)
	withHook := func(profile string) *api.ContainerAdjustment {
		a := proto.Clone(empty).(*api.ContainerAdjustment)
		// (Clone drops empty maps; protocmp takes nil and empty maps as equal.)
		a.Annotations = map[string]string{"podarmor.io/profile": profile}
		a.Hooks.CreateRuntime = []*api.Hook{wantHook()}
		a.Hooks.Poststop = []*api.Hook{wantHook()}
		return a
	}
	tests := map[string]struct {
		pod  *api.PodSandbox
		ctr  *api.Container
		want *api.ContainerAdjustment
		// wantPlugin is the plugin's own answer, before NRI merges it.
		wantPlugin *api.ContainerAdjustment
	}{
		"a container of a sandboxed pod gets the hook and the annotation": {
			pod:        sandboxed,
			ctr:        &api.Container{Id: "c-web", PodSandboxId: "pod-a", Name: "web"},
			want:       withHook("ap.shop.web"),
			wantPlugin: pluginAdjustment("ap.shop.web"),
		},
		"an ephemeral container (kubectl debug) of a sandboxed pod gets the same": {
			pod: sandboxed,
			ctr: &api.Container{Id: "c-debug", PodSandboxId: "pod-a", Name: "debugger-x7k2p",
				Annotations: map[string]string{"io.kubernetes.container.restartCount": "0"}},
			want:       withHook("ap.shop.web"),
			wantPlugin: pluginAdjustment("ap.shop.web"),
		},
		"the pod's label wins over a conflicting annotation of the container": {
			pod: sandboxed,
			ctr: &api.Container{Id: "c-liar", PodSandboxId: "pod-a", Name: "liar",
				Annotations: map[string]string{"podarmor.io/profile": "ap.shop.unconfined"}},
			want:       withHook("ap.shop.web"),
			wantPlugin: pluginAdjustment("ap.shop.web"),
		},
		"a container of another pod is left alone": {
			pod:        plain,
			ctr:        &api.Container{Id: "c-dns", PodSandboxId: "pod-b", Name: "coredns"},
			want:       empty,
			wantPlugin: nil,
		},
		"a container of another pod keeps an annotation it carries": {
			pod: plain,
			ctr: &api.Container{Id: "c-dns2", PodSandboxId: "pod-b", Name: "coredns",
				Annotations: map[string]string{"podarmor.io/profile": "ap.x.y"}},
			want:       empty,
			wantPlugin: nil,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			rpl, err := rt.a.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: tc.pod, Container: tc.ctr})
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.want, rpl.GetAdjust(), protocmp.Transform()); d != "" {
				t.Errorf("the runtime's adjustment (-want +got):\n%s", d)
			}
			if len(rpl.GetUpdate()) != 0 || len(rpl.GetEvict()) != 0 {
				t.Errorf("updates %v, evictions %v; want none", rpl.GetUpdate(), rpl.GetEvict())
			}
			got, ok := rt.metrics.lastAdjustment("CreateContainer")
			if !ok {
				t.Fatal("the plugin was not asked")
			}
			if d := cmp.Diff(tc.wantPlugin, got, protocmp.Transform()); d != "" {
				t.Errorf("the plugin's adjustment (-want +got):\n%s", d)
			}
		})
	}
}

func TestCreateContainerRefusesABadProfile(t *testing.T) {
	rt := startRuntime(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nil)
	startPlugin(t, rt.socket, nil)
	rt.waitPlugins(t, 1)
	pod := &api.PodSandbox{Id: "pod-c", Name: "odd", Namespace: "shop",
		Labels: map[string]string{"podarmor.io/profile": "-not-a-label-value-"}}
	_, err := rt.a.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: pod,
		Container: &api.Container{Id: "c-odd", PodSandboxId: "pod-c", Name: "odd"}})
	if err == nil {
		t.Fatal("the runtime created a container whose pod names an invalid profile")
	}
	if want := `podarmor: container odd of pod shop/odd: profile id "-not-a-label-value-"`; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want one containing %q", err, want)
	}
}

// A sandboxed pod that names the plugin as required (the annotation the default
// validator reads) is refused while the plugin is away, instead of starting without the
// hook; other pods are not held up.
func TestRequiredPluginAnnotationFailsClosedWithoutThePlugin(t *testing.T) {
	required := &api.PodSandbox{Id: "pod-r", Name: "pay", Namespace: "shop", Uid: "uid-r",
		Labels:      map[string]string{"podarmor.io/profile": "ap.shop.pay"},
		Annotations: map[string]string{"required-plugins.noderesource.dev": `["podarmor"]`}}
	validate := adaptation.WithDefaultValidator(&validator.DefaultValidatorConfig{Enable: true})
	create := func(rt *runtime, pod *api.PodSandbox, id string) (*api.CreateContainerResponse, error) {
		return rt.a.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: pod,
			Container: &api.Container{Id: id, PodSandboxId: pod.Id, Name: id}})
	}

	without := startRuntime(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nil, validate)
	if _, err := create(without, required, "c-1"); err == nil || !strings.Contains(err.Error(), `required plugin "podarmor" not present`) {
		t.Errorf("without the plugin: error %v, want the required plugin named as missing", err)
	}
	if _, err := create(without, plain, "c-2"); err != nil {
		t.Errorf("without the plugin, a pod that does not require it: %v", err)
	}

	with := startRuntime(t, filepath.Join(t.TempDir(), "nri.sock"), nil, nil, validate)
	startPlugin(t, with.socket, nil)
	with.waitPlugins(t, 2) // the default validator is a plugin too
	rpl, err := create(with, required, "c-3")
	if err != nil {
		t.Fatalf("with the plugin: %v", err)
	}
	if d := cmp.Diff([]*api.Hook{wantHook()}, rpl.GetAdjust().GetHooks().GetCreateRuntime(), protocmp.Transform()); d != "" {
		t.Errorf("with the plugin, createRuntime hooks (-want +got):\n%s", d)
	}
}

func TestObserverSeesSynchronizeAndContainerEvents(t *testing.T) {
	pods := []*api.PodSandbox{sandboxed, plain}
	ctrs := []*api.Container{
		{Id: "c-web", PodSandboxId: "pod-a", Name: "web", State: api.ContainerState_CONTAINER_RUNNING, Pid: 4242},
		{Id: "c-dns", PodSandboxId: "pod-b", Name: "coredns", State: api.ContainerState_CONTAINER_RUNNING, Pid: 777},
		{Id: "c-orphan", PodSandboxId: "pod-gone", Name: "orphan", State: api.ContainerState_CONTAINER_STOPPED},
	}
	rt := startRuntime(t, filepath.Join(t.TempDir(), "nri.sock"), pods, ctrs)
	obs := newObserver()
	startPlugin(t, rt.socket, obs)

	web := Container{ID: "c-web", Name: "web", State: StateRunning, PID: 4242, PodNamespace: "shop", PodName: "web",
		PodUID: "uid-a", PodLabels: sandboxed.Labels, Profile: "ap.shop.web"}
	dns := Container{ID: "c-dns", Name: "coredns", State: StateRunning, PID: 777, PodNamespace: "kube-system",
		PodName: "coredns", PodUID: "uid-b", PodLabels: plain.Labels}
	orphan := Container{ID: "c-orphan", Name: "orphan", State: StateStopped}
	obs.expect(t, event{"synchronized", []Container{web, dns, orphan}})

	rt.waitPlugins(t, 1)
	ctx := context.Background()
	side := &api.Container{Id: "c-side", PodSandboxId: "pod-a", Name: "side", State: api.ContainerState_CONTAINER_CREATED, Pid: 5150}
	if err := rt.a.StartContainer(ctx, &api.StartContainerRequest{Pod: sandboxed, Container: side}); err != nil {
		t.Fatal(err)
	}
	sideC := Container{ID: "c-side", Name: "side", State: StateCreated, PID: 5150, PodNamespace: "shop", PodName: "web",
		PodUID: "uid-a", PodLabels: sandboxed.Labels, Profile: "ap.shop.web"}
	obs.expect(t, event{"started", []Container{sideC}})

	stopped := proto.Clone(side).(*api.Container)
	stopped.State, stopped.Pid = api.ContainerState_CONTAINER_STOPPED, 0
	if _, err := rt.a.StopContainer(ctx, &api.StopContainerRequest{Pod: sandboxed, Container: stopped}); err != nil {
		t.Fatal(err)
	}
	sideC.State, sideC.PID = StateStopped, 0
	obs.expect(t, event{"stopped", []Container{sideC}})

	if err := rt.a.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: sandboxed, Container: stopped}); err != nil {
		t.Fatal(err)
	}
	obs.expect(t, event{"removed", []Container{sideC}})

	// Containers of other pods are reported too: reconciliation needs the whole view.
	dnsCtr := &api.Container{Id: "c-dns-2", PodSandboxId: "pod-b", Name: "coredns", State: api.ContainerState_CONTAINER_CREATED, Pid: 778}
	if err := rt.a.StartContainer(ctx, &api.StartContainerRequest{Pod: plain, Container: dnsCtr}); err != nil {
		t.Fatal(err)
	}
	obs.expect(t, event{"started", []Container{{ID: "c-dns-2", Name: "coredns", State: StateCreated, PID: 778,
		PodNamespace: "kube-system", PodName: "coredns", PodUID: "uid-b", PodLabels: plain.Labels}}})
}

func TestPluginReconnectsWhenTheRuntimeRestarts(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "nri.sock")
	first := startRuntime(t, socket, []*api.PodSandbox{sandboxed},
		[]*api.Container{{Id: "c-web", PodSandboxId: "pod-a", Name: "web", State: api.ContainerState_CONTAINER_RUNNING, Pid: 4242}})
	obs := newObserver()
	p := startPlugin(t, socket, obs)
	obs.expect(t, event{"synchronized", []Container{{ID: "c-web", Name: "web", State: StateRunning, PID: 4242,
		PodNamespace: "shop", PodName: "web", PodUID: "uid-a", PodLabels: sandboxed.Labels, Profile: "ap.shop.web"}}})
	first.waitPlugins(t, 1)
	waitFor(t, "the plugin to say it is connected", p.Connected)
	if n := p.Connections(); n != 1 {
		t.Errorf("connections after the first: %d", n)
	}

	// The runtime goes away: its socket and the plugin's connection with it. Let the
	// plugin fail to connect a few times before the runtime is back.
	first.crash()
	waitFor(t, "the plugin to say it is not connected", func() bool { return !p.Connected() })
	time.Sleep(300 * time.Millisecond)

	// The new runtime knows a container created while the plugin was away.
	second := startRuntime(t, socket, []*api.PodSandbox{sandboxed},
		[]*api.Container{
			{Id: "c-web", PodSandboxId: "pod-a", Name: "web", State: api.ContainerState_CONTAINER_RUNNING, Pid: 4242},
			{Id: "c-late", PodSandboxId: "pod-a", Name: "late", State: api.ContainerState_CONTAINER_RUNNING, Pid: 4343},
		})
	obs.expect(t, event{"synchronized", []Container{
		{ID: "c-web", Name: "web", State: StateRunning, PID: 4242, PodNamespace: "shop", PodName: "web", PodUID: "uid-a",
			PodLabels: sandboxed.Labels, Profile: "ap.shop.web"},
		{ID: "c-late", Name: "late", State: StateRunning, PID: 4343, PodNamespace: "shop", PodName: "web", PodUID: "uid-a",
			PodLabels: sandboxed.Labels, Profile: "ap.shop.web"},
	}})
	second.waitPlugins(t, 1)
	waitFor(t, "the plugin to say it is connected again", p.Connected)
	if n := p.Connections(); n != 2 {
		t.Errorf("connections after the reconnection: %d", n)
	}

	if !p.Seen("c-late") || p.Seen("c-new") {
		t.Errorf("after the synchronization: Seen(c-late) %t, Seen(c-new) %t; want true, false", p.Seen("c-late"), p.Seen("c-new"))
	}
	rpl, err := second.a.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: sandboxed,
		Container: &api.Container{Id: "c-new", PodSandboxId: "pod-a", Name: "new"}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Seen("c-new") {
		t.Error("the container the runtime created is not seen")
	}
	if d := cmp.Diff([]*api.Hook{wantHook()}, rpl.GetAdjust().GetHooks().GetCreateRuntime(), protocmp.Transform()); d != "" {
		t.Errorf("createRuntime hooks after the reconnection (-want +got):\n%s", d)
	}
	if got := rpl.GetAdjust().GetAnnotations()["podarmor.io/profile"]; got != "ap.shop.web" {
		t.Errorf("annotation %q after the reconnection", got)
	}
}

func TestRunReturnsWhenItsContextEnds(t *testing.T) {
	// No runtime at all: Run keeps retrying until told to stop.
	p, err := New(Config{Socket: filepath.Join(t.TempDir(), "nri.sock"), Hook: HookConfig{Path: hookPath},
		Logger: testLogger(t), MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	if p.Connected() || p.Connections() != 0 {
		t.Errorf("Connected %v, %d connections, with no runtime to connect to", p.Connected(), p.Connections())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5s of its context's end")
	}
}

func wantHook() *api.Hook {
	return &api.Hook{
		Path: hookPath,
		Args: []string{"podarmor-enforcer", "oci-hook", "--socket=/run/podarmor/enforcer.sock", "--timeout=10s",
			"--on-unavailable=refuse", "--unprotected-dir=/run/podarmor/unprotected"},
		Timeout: api.Int(15),
	}
}

func pluginAdjustment(profile string) *api.ContainerAdjustment {
	return &api.ContainerAdjustment{
		Annotations: map[string]string{"podarmor.io/profile": profile},
		Hooks:       &api.Hooks{CreateRuntime: []*api.Hook{wantHook()}, Poststop: []*api.Hook{wantHook()}},
	}
}

// noPluginReply is the adjustment an adaptation without plugins returns.
func noPluginReply(t *testing.T) *api.ContainerAdjustment {
	t.Helper()
	a, err := adaptation.New("test-runtime", "v0", syncWith(nil, nil), noUpdates,
		adaptation.WithDisabledExternalConnections(), adaptation.WithPluginPath(t.TempDir()),
		adaptation.WithPluginConfigPath(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	rpl, err := a.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: plain,
		Container: &api.Container{Id: "c0", PodSandboxId: "pod-b", Name: "c0"}})
	if err != nil {
		t.Fatal(err)
	}
	return rpl.GetAdjust()
}

// startPlugin runs a plugin against socket until the test ends.
func startPlugin(t *testing.T, socket string, obs Observer) *Plugin {
	t.Helper()
	cfg := Config{Socket: socket, Hook: HookConfig{Path: hookPath}, Logger: testLogger(t),
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}
	if obs != nil {
		cfg.Observer = obs
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context's end")
		}
	})
	return p
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runtime is NRI's runtime side in the test. The adaptation listens on a socket of its
// own, and a relay connects the plugin's socket to it: Adaptation.Stop closes the
// listener but not the connections of external plugins (a containerd that exits closes
// them because the process ends), so the relay is what closes the runtime's end of the
// connection when the test stops the runtime.
type runtime struct {
	socket  string
	a       *adaptation.Adaptation
	metrics *metrics
	relay   *relay
}

func startRuntime(t *testing.T, socket string, pods []*api.PodSandbox, ctrs []*api.Container, opts ...adaptation.Option) *runtime {
	t.Helper()
	dir := t.TempDir()
	m := newMetrics()
	a, err := adaptation.New("test-runtime", "v0", syncWith(pods, ctrs), noUpdates,
		append([]adaptation.Option{
			adaptation.WithSocketPath(filepath.Join(dir, "adaptation.sock")),
			adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
			adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
			adaptation.WithMetrics(m),
		}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := startRelay(socket, filepath.Join(dir, "adaptation.sock"))
	if err != nil {
		a.Stop()
		t.Fatal(err)
	}
	rt := &runtime{socket: socket, a: a, metrics: m, relay: r}
	t.Cleanup(rt.crash)
	return rt
}

// crash stops the runtime as a process exit would: the socket and every connection
// close.
func (rt *runtime) crash() {
	rt.relay.close()
	rt.a.Stop()
}

// waitPlugins waits until n plugins are connected and synchronized: the adaptation
// relays requests only to those.
func (rt *runtime) waitPlugins(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if rt.metrics.pluginCount() == n {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d plugins connected after 10s, want %d", rt.metrics.pluginCount(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func syncWith(pods []*api.PodSandbox, ctrs []*api.Container) adaptation.SyncFn {
	return func(ctx context.Context, cb adaptation.SyncCB) error {
		_, err := cb(ctx, pods, ctrs)
		return err
	}
}

func noUpdates(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return nil, nil
}

// metrics records what the adaptation reports: the number of plugins, and the
// adjustment each plugin returned.
type metrics struct {
	mu      sync.Mutex
	plugins int
	adjust  map[string]*api.ContainerAdjustment
	seen    map[string]bool
}

func newMetrics() *metrics {
	return &metrics{adjust: map[string]*api.ContainerAdjustment{}, seen: map[string]bool{}}
}

func (m *metrics) RecordPluginInvocation(string, string, error)      {}
func (m *metrics) RecordPluginLatency(string, string, time.Duration) {}
func (m *metrics) RecordPluginAdjustments(_, op string, a *api.ContainerAdjustment, _, _ int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adjust[op] = a
	m.seen[op] = true
}
func (m *metrics) UpdatePluginCount(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.plugins = n
}

func (m *metrics) pluginCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.plugins
}

// lastAdjustment returns and forgets the last adjustment a plugin returned for op.
func (m *metrics) lastAdjustment(op string) (*api.ContainerAdjustment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.adjust[op], m.seen[op]
	delete(m.adjust, op)
	delete(m.seen, op)
	return a, ok
}

// relay forwards connections from a socket to another.
type relay struct {
	l     net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startRelay(from, to string) (*relay, error) {
	l, err := net.Listen("unix", from)
	if err != nil {
		return nil, err
	}
	r := &relay{l: l}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", to)
			if err != nil {
				in.Close()
				continue
			}
			r.mu.Lock()
			r.conns = append(r.conns, in, out)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer r.wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	return r, nil
}

func (r *relay) close() {
	r.l.Close()
	r.mu.Lock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
}

// observer records what the plugin reports.
type event struct {
	kind       string
	containers []Container
}

type observer struct{ events chan event }

func newObserver() *observer { return &observer{events: make(chan event, 100)} }

func (o *observer) Synchronized(cs []Container)  { o.events <- event{"synchronized", cs} }
func (o *observer) ContainerStarted(c Container) { o.events <- event{"started", []Container{c}} }
func (o *observer) ContainerStopped(c Container) { o.events <- event{"stopped", []Container{c}} }
func (o *observer) ContainerRemoved(c Container) { o.events <- event{"removed", []Container{c}} }

// expect waits for the next event and checks it.
func (o *observer) expect(t *testing.T, want event) {
	t.Helper()
	select {
	case got := <-o.events:
		if d := cmp.Diff(want, got, cmp.AllowUnexported(event{})); d != "" {
			t.Fatalf("observer event (-want +got):\n%s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s event within 10s", want.kind)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// quietLogger drops NRI's debug and info messages.
type quietLogger struct{}

func (quietLogger) Debugf(context.Context, string, ...any) {}
func (quietLogger) Infof(context.Context, string, ...any)  {}
func (quietLogger) Warnf(_ context.Context, f string, a ...any) {
	slog.Warn("nri adaptation: " + fmt.Sprintf(f, a...))
}
func (quietLogger) Errorf(_ context.Context, f string, a ...any) {
	slog.Error("nri adaptation: " + fmt.Sprintf(f, a...))
}

// TestReconnect: Reconnect drops the connection, and the plugin connects again to the
// same runtime, which synchronizes it anew.
func TestReconnect(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "nri.sock")
	rt := startRuntime(t, socket, []*api.PodSandbox{sandboxed},
		[]*api.Container{{Id: "c-web", PodSandboxId: "pod-a", Name: "web", State: api.ContainerState_CONTAINER_RUNNING, Pid: 4242}})
	obs := newObserver()
	p := startPlugin(t, socket, obs)
	want := event{"synchronized", []Container{{ID: "c-web", Name: "web", State: StateRunning, PID: 4242,
		PodNamespace: "shop", PodName: "web", PodUID: "uid-a", PodLabels: sandboxed.Labels, Profile: "ap.shop.web"}}}
	obs.expect(t, want)
	rt.waitPlugins(t, 1)
	waitFor(t, "the plugin to say it is connected", p.Connected)

	p.Reconnect()
	obs.expect(t, want)
	waitFor(t, "the plugin connected a second time", func() bool { return p.Connected() && p.Connections() == 2 })
	rt.waitPlugins(t, 1)
}
