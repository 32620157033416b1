package nri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"

	"github.com/podarmor/podarmor/enforcer/hook"
)

// Defaults of Config.
const (
	// DefaultSocket is the runtime's NRI socket (containerd's and CRI-O's default).
	DefaultSocket = api.DefaultSocketPath
	// DefaultPluginName is the name the plugin registers with.
	DefaultPluginName = "podarmor"
	// DefaultPluginIndex is the plugin's place in the runtime's order of NRI plugins:
	// the last one. The runtime asks plugins in the order of their index, and a later
	// plugin could remove or replace the podarmor.io/profile annotation an earlier one
	// set. Hooks cannot be taken away by any plugin (NRI adjustments only add hooks),
	// but the annotation can, and running last leaves nobody after us to do it.
	DefaultPluginIndex = "99"
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between attempts to
	// connect to the runtime.
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
)

// startTimeout bounds a connection's registration and configuration by the runtime (the
// runtime's own registration timeout is 5 s; it configures the plugin right after).
const startTimeout = 15 * time.Second

// Config configures a Plugin.
type Config struct {
	// Socket is the runtime's NRI socket; DefaultSocket when empty.
	Socket string
	// PluginName is the name the plugin registers with; DefaultPluginName when empty.
	PluginName string
	// PluginIndex is the plugin's two-digit index; DefaultPluginIndex when empty.
	PluginIndex string
	// Hook is the OCI hook injected into the containers of sandboxed pods. Its Path is
	// required.
	Hook HookConfig
	// Select tells sandboxed pods from others; SelectByLabel when nil.
	Select SelectFunc
	// Observer learns about the runtime's containers; nil for none.
	Observer Observer
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between connection attempts; the wait
	// doubles from MinBackoff after each failed attempt, up to MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
}

func (c *Config) defaults() error {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.PluginName == "" {
		c.PluginName = DefaultPluginName
	}
	if err := api.CheckPluginName(c.PluginName); err != nil {
		return fmt.Errorf("plugin name: %w", err)
	}
	if c.PluginIndex == "" {
		c.PluginIndex = DefaultPluginIndex
	}
	if err := api.CheckPluginIndex(c.PluginIndex); err != nil {
		return fmt.Errorf("plugin index: %w", err)
	}
	if err := c.Hook.defaults(); err != nil {
		return err
	}
	if c.Select == nil {
		c.Select = SelectByLabel
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("max backoff %v is less than min backoff %v", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// State is a container's state as the runtime reports it.
type State string

// The states.
const (
	StateUnknown State = "unknown"
	StateCreated State = "created"
	StatePaused  State = "paused"
	StateRunning State = "running"
	StateStopped State = "stopped"
)

func stateOf(s api.ContainerState) State {
	switch s {
	case api.ContainerState_CONTAINER_CREATED:
		return StateCreated
	case api.ContainerState_CONTAINER_PAUSED:
		return StatePaused
	case api.ContainerState_CONTAINER_RUNNING:
		return StateRunning
	case api.ContainerState_CONTAINER_STOPPED:
		return StateStopped
	}
	return StateUnknown
}

// Container is the runtime's view of one container.
type Container struct {
	// ID is the runtime's container ID, the one OCI hooks see.
	ID string
	// Name is the container's name in its pod.
	Name string
	// State is the runtime's state of the container.
	State State
	// PID is the container's init process in the node's PID namespace; 0 when the
	// runtime did not say (before the container's task exists, or after it ended).
	PID int
	// PodNamespace, PodName and PodUID name the container's pod; PodLabels are its labels.
	PodNamespace string
	PodName      string
	PodUID       string
	PodLabels    map[string]string
	// Profile is the profile the selection gives the pod, "" when it is not sandboxed.
	Profile string
}

// Observer learns the runtime's view of containers. The plugin calls it from one
// goroutine, in the order the runtime told the plugin, and never on the runtime's
// request path: a slow observer delays later calls, not containers.
type Observer interface {
	// Synchronized is the runtime's full list of containers, given at every connection
	// to the runtime: at start, and after each reconnection (containers created in
	// between were created without the plugin, hence without the hook).
	Synchronized(containers []Container)
	// ContainerStarted is a container about to start (its task exists, so PID is
	// usually set).
	ContainerStarted(c Container)
	// ContainerStopped is a container whose process has ended.
	ContainerStopped(c Container)
	// ContainerRemoved is a container the runtime has forgotten.
	ContainerRemoved(c Container)
}

// Plugin is podarmor's NRI plugin: it connects to the runtime's NRI socket, injects the
// OCI hook into the containers of sandboxed pods, and reports the runtime's containers to
// an Observer.
type Plugin struct {
	cfg         Config
	log         *slog.Logger
	q           queue
	connected   atomic.Bool
	connections atomic.Uint64

	mu sync.Mutex
	// seen are the containers the runtime told the plugin of in the current session
	// (its synchronization, then each creation and start).
	seen map[string]bool
	// drop closes the current session's connection; nil between sessions.
	drop func()
}

// New checks cfg and returns a plugin; Run connects it.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("nri plugin: %w", err)
	}
	p := &Plugin{cfg: cfg, log: cfg.Logger.With("component", "nri")}
	p.q.wake = make(chan struct{}, 1)
	return p, nil
}

// Connected reports whether the plugin is registered with the runtime now and has
// answered its synchronization: while it is not, the runtime creates containers without
// asking it, so without the hook. (A runtime adds a plugin to those it asks only once
// the plugin has answered the synchronization in time; the plugin is counted connected
// when it has answered.) The enforcer's readiness uses it.
func (p *Plugin) Connected() bool { return p.connected.Load() }

// Connections is how many times the runtime has configured the plugin: 1 after the
// first connection, one more after each reconnection (a runtime restart).
func (p *Plugin) Connections() uint64 { return p.connections.Load() }

// Seen reports whether the runtime told the plugin of container id (by its
// synchronization, or when it created or started it) since the plugin last connected.
// A container created after the synchronization that the plugin never saw was created
// without asking it: the runtime does not count the plugin as one of its plugins, even
// though the connection is open (containerd drops a plugin that answered the
// synchronization late, and keeps the connection). Reconnect then.
func (p *Plugin) Seen(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[id]
}

// Reconnect closes the connection to the runtime; Run connects again, which makes the
// runtime synchronize the plugin anew.
func (p *Plugin) Reconnect() {
	p.mu.Lock()
	drop := p.drop
	p.mu.Unlock()
	if drop != nil {
		drop()
	}
}

func (p *Plugin) see(ids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range ids {
		p.seen[id] = true
	}
}

// Run connects to the runtime and serves it until ctx ends, reconnecting with backoff
// whenever the connection fails or the runtime closes it (a runtime restart does). It
// returns nil when ctx ends. Run must not be called twice at the same time.
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.q.run(ctx)
	}()
	defer wg.Wait()
	defer cancel()

	backoff := p.cfg.MinBackoff
	failures := 0
	for {
		connected, err := p.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			backoff, failures = p.cfg.MinBackoff, 0
		}
		failures++
		// A restarting runtime refuses connections for a while: say so once, then
		// only every tenth attempt.
		if failures == 1 || failures%10 == 0 {
			p.log.Warn("NRI: not connected to the runtime, retrying", "socket", p.cfg.Socket,
				"error", err, "attempts", failures, "retryIn", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, p.cfg.MaxBackoff)
	}
}

// session is one connection to the runtime: it returns when the connection could not be
// made, when the runtime closes it, or when ctx ends. connected is whether the runtime
// configured the plugin.
func (p *Plugin) session(ctx context.Context) (connected bool, err error) {
	closed := make(chan struct{})
	var closeOnce sync.Once
	var mu sync.Mutex
	var conn net.Conn
	dropConn := func() {
		mu.Lock()
		defer mu.Unlock()
		if conn != nil {
			conn.Close()
		}
	}
	p.mu.Lock()
	p.seen, p.drop = map[string]bool{}, dropConn
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.drop = nil
		p.mu.Unlock()
	}()
	s, err := stub.New(handler{p},
		stub.WithPluginName(p.cfg.PluginName),
		stub.WithPluginIdx(p.cfg.PluginIndex),
		stub.WithSocketPath(p.cfg.Socket),
		stub.WithLogger(nriLogger{p.log}),
		stub.WithOnClose(func() { closeOnce.Do(func() { close(closed) }) }),
		stub.WithDialer(func(path string) (net.Conn, error) {
			c, err := net.DialTimeout("unix", path, startTimeout)
			mu.Lock()
			conn = c
			mu.Unlock()
			return c, err
		}),
		// A request the plugin does not answer fails rather than proceeding without
		// the plugin: a container created while the plugin hangs would miss its hook.
		// The runtime drops the plugin after such a failure (and Run reconnects), so
		// one request fails, not every request. Runtimes whose NRI predates failure
		// policies ignore this.
		stub.WithFailurePolicy(&api.FailurePolicy{FailRequest: true}),
	)
	if err != nil {
		return false, fmt.Errorf("NRI plugin: %w", err)
	}
	started := make(chan error, 1)
	go func() { started <- s.Start(ctx) }()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case err := <-started:
		if err != nil {
			return false, fmt.Errorf("connect to the runtime's NRI socket %s: %w", p.cfg.Socket, err)
		}
	case <-ctx.Done():
		// The stub waits for the runtime's configuration without a way to stop
		// waiting; closing the connection is all we can do, and a stub that never got
		// configured stays blocked.
		dropConn()
		return false, ctx.Err()
	case <-timer.C:
		dropConn()
		return false, fmt.Errorf("the runtime at %s did not configure the plugin within %v", p.cfg.Socket, startTimeout)
	}
	p.log.Info("NRI: connected to the runtime", "socket", p.cfg.Socket,
		"plugin", p.cfg.PluginIndex+"-"+p.cfg.PluginName, "runtimeNRIVersion", s.RuntimeNRIVersion())
	// Connected once the runtime's synchronization is answered (handler.Synchronize).
	defer p.connected.Store(false)
	select {
	case <-closed:
		return true, errors.New("the runtime closed the connection")
	case <-ctx.Done():
		s.Stop()
		return true, ctx.Err()
	}
}

// handler is what the NRI stub calls; its methods are the events the plugin subscribes
// to (the stub derives the subscription from the methods).
type handler struct{ p *Plugin }

func (h handler) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	byID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		byID[pod.GetId()] = pod
	}
	list := make([]Container, 0, len(ctrs))
	for _, c := range ctrs {
		list = append(list, h.p.container(byID[c.GetPodSandboxId()], c))
		h.p.see(c.GetId())
	}
	h.p.log.Info("NRI: synchronized with the runtime", "pods", len(pods), "containers", len(ctrs))
	h.p.notify(func(o Observer) { o.Synchronized(list) })
	h.p.connections.Add(1)
	h.p.connected.Store(true)
	return nil, nil
}

func (h handler) CreateContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	h.p.see(ctr.GetId())
	profile := h.p.cfg.Select(podOf(pod))
	if profile == "" {
		return nil, nil, nil
	}
	a, err := Adjust(profile, h.p.cfg.Hook)
	if err != nil {
		// Refuse the container: it asked for a sandbox we cannot set up.
		err = fmt.Errorf("podarmor: container %s of pod %s/%s: %w", ctr.GetName(), pod.GetNamespace(), pod.GetName(), err)
		h.p.log.Error("NRI: refuse container", "error", err)
		return nil, nil, err
	}
	if old, ok := ctr.GetAnnotations()[hook.AnnotationProfile]; ok && old != profile {
		h.p.log.Warn("NRI: container annotation "+hook.AnnotationProfile+" replaced by its pod's label",
			"pod", pod.GetNamespace()+"/"+pod.GetName(), "container", ctr.GetName(), "annotation", old, "profile", profile)
	}
	h.p.log.Debug("NRI: hook injected", "pod", pod.GetNamespace()+"/"+pod.GetName(),
		"container", ctr.GetName(), "id", ctr.GetId(), "profile", profile)
	return a, nil, nil
}

func (h handler) StartContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	h.p.see(ctr.GetId())
	c := h.p.container(pod, ctr)
	h.p.notify(func(o Observer) { o.ContainerStarted(c) })
	return nil
}

func (h handler) StopContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) ([]*api.ContainerUpdate, error) {
	c := h.p.container(pod, ctr)
	h.p.notify(func(o Observer) { o.ContainerStopped(c) })
	return nil, nil
}

func (h handler) RemoveContainer(_ context.Context, pod *api.PodSandbox, ctr *api.Container) error {
	h.p.mu.Lock()
	delete(h.p.seen, ctr.GetId())
	h.p.mu.Unlock()
	c := h.p.container(pod, ctr)
	h.p.notify(func(o Observer) { o.ContainerRemoved(c) })
	return nil
}

func podOf(pod *api.PodSandbox) Pod {
	return Pod{
		Namespace:   pod.GetNamespace(),
		Name:        pod.GetName(),
		UID:         pod.GetUid(),
		Labels:      pod.GetLabels(),
		Annotations: pod.GetAnnotations(),
	}
}

// container converts the runtime's records; pod is nil when the runtime did not list
// the container's pod.
func (p *Plugin) container(pod *api.PodSandbox, c *api.Container) Container {
	out := Container{
		ID:    c.GetId(),
		Name:  c.GetName(),
		State: stateOf(c.GetState()),
		PID:   int(c.GetPid()),
	}
	if pod != nil {
		out.PodNamespace, out.PodName, out.PodUID = pod.GetNamespace(), pod.GetName(), pod.GetUid()
		out.PodLabels = pod.GetLabels()
		out.Profile = p.cfg.Select(podOf(pod))
	}
	return out
}

func (p *Plugin) notify(f func(Observer)) {
	if p.cfg.Observer == nil {
		return
	}
	o := p.cfg.Observer
	p.q.push(func() { f(o) })
}

// queue runs functions in order on one goroutine. It is unbounded: it holds one entry
// per container event, and the runtime makes those no faster than it starts containers.
type queue struct {
	mu    sync.Mutex
	items []func()
	wake  chan struct{}
}

func (q *queue) push(f func()) {
	q.mu.Lock()
	q.items = append(q.items, f)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) run(ctx context.Context) {
	for {
		q.mu.Lock()
		items := q.items
		q.items = nil
		q.mu.Unlock()
		for _, f := range items {
			f()
		}
		if len(items) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-q.wake:
		}
	}
}

// nriLogger passes the NRI library's messages to slog. Its Info messages (plugin
// created, registered, configured) go to Debug: Run logs what matters itself.
type nriLogger struct{ log *slog.Logger }

func (l nriLogger) Debugf(_ context.Context, format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l nriLogger) Infof(_ context.Context, format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l nriLogger) Warnf(_ context.Context, format string, args ...any) {
	l.log.Warn(fmt.Sprintf(format, args...))
}

func (l nriLogger) Errorf(_ context.Context, format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}
