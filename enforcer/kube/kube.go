// Package kube is the node enforcer's Kubernetes mode: the agent the DaemonSet runs on
// every node. It watches ArmorPolicies and ClusterArmorPolicies and keeps the node's
// profiles equal to them (enforcer/profiles: BPF tables, AppArmor profiles, seccomp
// files); answers the OCI hook with the profile of the container's pod, read from an
// informer limited to the node (enforcer/registrar); reconciles the BPF registrations
// with the containers running on the node, periodically and whenever a pod changes,
// from a scan of /proc (the fallback for runtimes without hooks, and the repair for
// anything lost); reports per policy what it loaded; and serves /metrics, /healthz and
// /readyz.
//
// On start it loads every policy before it opens the hook socket, so the first hook
// answered finds every profile in place. On stop it closes the socket and leaves
// everything loaded: pinned BPF state, AppArmor profiles and seccomp files keep
// confining the containers while the enforcer is away.
package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/podarmor/podarmor/enforcer/apparmor"
	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/containerd"
	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/nodestatus"
	"github.com/podarmor/podarmor/enforcer/nri"
	"github.com/podarmor/podarmor/enforcer/profiles"
	"github.com/podarmor/podarmor/enforcer/registrar"
	"github.com/podarmor/podarmor/enforcer/seccomp"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/cluster"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Defaults of Config.
const (
	DefaultReconcileInterval = 10 * time.Second
	DefaultPodWait           = 2 * time.Second
	DefaultNRIWait           = 30 * time.Second
	DefaultListen            = ":9810"
)

// Config configures Run.
type Config struct {
	// NodeName is the node this enforcer runs on (the pod's spec.nodeName, from the
	// downward API). Required.
	NodeName string
	// REST reaches the API server. Required.
	REST *rest.Config
	// APIServer and ClusterCIDRs are what $APISERVER and $CLUSTER_CIDRS stand for in
	// policies; APIServer empty reads the kubernetes Service (the webhook does the same).
	APIServer, ClusterCIDRs []string

	// Socket is the hook socket; hook.DefaultSocket when empty.
	Socket string
	// HookTimeout bounds one hook request; hook.DefaultTimeout when zero.
	HookTimeout time.Duration
	// UnprotectedDir is where the hook records containers it let run unregistered;
	// hook.DefaultUnprotectedDir when empty.
	UnprotectedDir string
	// PodWait is how long a hook waits for a pod the informer has not seen before it
	// asks the API server; DefaultPodWait when zero.
	PodWait time.Duration
	// ReconcileInterval is the period of the reconciliation; DefaultReconcileInterval
	// when zero.
	ReconcileInterval time.Duration

	// NRI, when its Hook.Path is set, runs the NRI plugin (enforcer/nri) that injects
	// the OCI hook into the containers of sandboxed pods; its Socket and the hook's
	// socket, timeout and unprotected directory default to the fields above.
	NRI nri.Config
	// NRIWait is how long the enforcer waits at start for the NRI plugin to connect
	// before it loads the policies; DefaultNRIWait when zero.
	NRIWait time.Duration
	// ContainerdSocket, when set, is containerd's gRPC socket, whose event stream the
	// enforcer follows to reconcile at every task start (package enforcer/containerd):
	// the fallback for a containerd without NRI, where containers get no hook.
	ContainerdSocket string

	// PinDir is the BPF enforcer's bpffs directory; bpf.DefaultPinDir when empty.
	PinDir string
	// BPFStats turns on the kernel's run-time statistics of BPF programs while the
	// enforcer runs, for the podarmor_enforcer_bpf_program_* metrics. It costs every
	// BPF program on the node (not only podarmor's) two clock reads per run.
	BPFStats bool
	// AppArmor configures loading AppArmor profiles.
	AppArmor apparmor.Config
	// SeccompRoot is the kubelet's seccomp root; seccomp.DefaultRoot when empty.
	SeccompRoot string
	// Proc is where the node's procfs is mounted; "/proc" when empty.
	Proc string

	// Listen is the address of /metrics, /healthz and /readyz; DefaultListen when
	// empty, "-" for none.
	Listen string
	// Events receives one JSON line (event.Record) per BPF decision, with the pod,
	// container and policy; nil discards them.
	Events *event.Writer
	// PodEventBurst and PodEventInterval rate-limit the Kubernetes Events a denial
	// makes on its pod, per pod and rule: a burst, then one per interval
	// (DefaultEventBurst, DefaultEventInterval when zero; a negative burst makes none).
	PodEventBurst    int
	PodEventInterval time.Duration
	// Results, if set, is called with every policy's result on this node after each
	// change (the node status writer).
	Results func([]PolicyResult)
	// Ready, if set, is called once the hook socket accepts requests, with the address
	// of the HTTP listener ("" without one).
	Ready func(httpAddr string)
	// Loaded, if set, is called with the BPF enforcer once it is loaded (tests look
	// into its maps through it).
	Loaded func(*bpf.Enforcer)
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.NodeName == "" {
		return errors.New("kube: no node name (set it from the pod's spec.nodeName)")
	}
	if c.REST == nil {
		return errors.New("kube: no API server configuration")
	}
	if c.UnprotectedDir == "" {
		c.UnprotectedDir = hook.DefaultUnprotectedDir
	}
	if c.PodWait == 0 {
		c.PodWait = DefaultPodWait
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.NRIWait == 0 {
		c.NRIWait = DefaultNRIWait
	}
	if c.Proc == "" {
		c.Proc = "/proc"
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PodEventBurst == 0 {
		c.PodEventBurst = DefaultEventBurst
	}
	if c.PodEventInterval == 0 {
		c.PodEventInterval = DefaultEventInterval
	}
	return nil
}

// agent is one run of the enforcer.
type agent struct {
	// unreadable is the last reconciliation's Reconciled.Unreadable, to log changes only.
	unreadable atomic.Int64

	cfg     Config
	log     *slog.Logger
	kube    kubernetes.Interface
	enf     *bpf.Enforcer // nil without BPF LSM
	manager *profiles.Manager
	reg     *registrar.Registrar
	pods    cache.SharedIndexInformer
	armor   cache.SharedIndexInformer
	cluster cache.SharedIndexInformer
	metrics *metrics

	// policyChanged and podChanged wake the loops; buffered by one, so a burst of
	// changes is one pass.
	policyChanged chan struct{}
	podChanged    chan struct{}

	resolver  *podResolver
	podEvents *podEvents
	// missing says which enforcers the node lacks, and why.
	missing []string
	// started names the containers containerd reported starting (--containerd-socket),
	// so that the reconciliation can register them before the kubelet reports them in
	// their pod's status.
	started startedContainers

	mu      sync.Mutex
	results []PolicyResult
	// rulesets are the compiled rule sets by profile ID, to find the rule of an AppArmor
	// decision.
	rulesets map[string]*ruleset.RuleSet
	ready    atomic.Bool
	// nri is the NRI plugin, nil when Config.NRI has no hook path.
	nri *nri.Plugin
}

// Run enforces the cluster's policies on the node until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.defaults(); err != nil {
		return err
	}
	log := cfg.Logger
	kube, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg.REST)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	a := &agent{
		cfg: cfg, log: log, kube: kube,
		policyChanged: make(chan struct{}, 1), podChanged: make(chan struct{}, 1),
	}

	// The node's enforcers. A missing one is reported, not fatal: policies that need
	// it are Unsupported on this node, and its status says so.
	a.metrics = newMetrics(a)
	pc := profiles.Config{Seccomp: seccomp.Store{Root: cfg.SeccompRoot}, Observe: a.metrics.observeLoad, Logger: log}
	if enf, err := bpf.Load(bpf.Options{PinDir: cfg.PinDir, ProgramStats: cfg.BPFStats, Logger: log}); err != nil {
		pc.BPFMissing = err.Error()
		log.Error("BPF LSM enforcer unavailable: policies with the BPF enforcer are not enforced by BPF on this node", "error", err)
	} else {
		a.enf = enf
		defer enf.Close()
		if cfg.Loaded != nil {
			cfg.Loaded(enf)
		}
		pc.BPF = enf
		pc.MissingHooks = map[string]string{}
		for _, h := range enf.Hooks() {
			if !h.Attached {
				pc.MissingHooks[h.Name] = h.Reason
				log.Warn("LSM hook not attached: rules that need it are not enforced by BPF", "hook", h.Name, "reason", h.Reason)
			}
		}
	}
	if loader, err := apparmor.New(cfg.AppArmor); err != nil {
		pc.AppArmorMissing = err.Error()
		log.Error("AppArmor unavailable: policies with the AppArmor enforcer are not enforced by AppArmor on this node", "error", err)
	} else {
		pc.AppArmor = loader
	}
	a.manager = profiles.New(pc)
	// AppArmor's decisions come from the audit log, joined before any profile loads so
	// that none is missed.
	var audit *auditLog
	if pc.AppArmor != nil {
		if audit, err = a.openAudit(); err != nil {
			log.Error("AppArmor decisions are not reported (no event lines, pod Events or pod_denials for them); AppArmor still enforces", "error", err)
			a.missing = append(a.missing, fmt.Sprintf("AppArmor decisions not reported: %v", err))
		}
	}
	for name, why := range map[string]string{"BPF LSM": pc.BPFMissing, "AppArmor": pc.AppArmorMissing} {
		if why != "" {
			a.missing = append(a.missing, fmt.Sprintf("%s unavailable: %s", name, why))
		}
	}
	slices.Sort(a.missing)
	started := time.Now()
	features := nodeFeatures(pc, cmp.Or(cfg.AppArmor.SecurityFS, apparmor.DefaultSecurityFS))
	var hooks []bpf.Hook
	if a.enf != nil {
		hooks = a.enf.Hooks()
	}
	a.metrics.setFeatures(features, hooks)
	a.metrics.setFeature("apparmor_audit", audit != nil)
	status, err := nodestatus.New(dyn, cfg.NodeName, nodestatus.Options{Logger: log})
	if err != nil {
		return err
	}
	report := cfg.Results
	cfg.Results = func(rs []PolicyResult) {
		status.Set(nodeReport(started, features, rs))
		if report != nil {
			report(rs)
		}
	}
	a.cfg.Results = cfg.Results

	broadcaster := events.NewBroadcaster(&events.EventSinkImpl{Interface: kube.EventsV1()})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, "podarmor-enforcer")
	a.podEvents = newPodEvents(func(pod *corev1.ObjectReference, reason, note string) {
		recorder.Eventf(pod, nil, corev1.EventTypeWarning, reason, "Deny", "%s", note)
	}, cfg.PodEventBurst, cfg.PodEventInterval)
	var registry registrar.Registry
	if a.enf != nil {
		registry = a.enf
	}
	resolver := &podResolver{kube: kube, wait: cfg.PodWait}
	a.resolver = resolver
	a.reg, err = registrar.New(registrar.Config{
		Registry: registry,
		Resolve:  resolver.Resolve,
		Profiles: a.manager.Lookup,
		Proc:     cfg.Proc,
		Observe:  a.metrics.observeRegistration,
		Logger:   log,
	})
	if err != nil {
		return err
	}

	// Informers: every policy, and the pods of this node only.
	df := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	a.armor = df.ForResource(armorPolicies).Informer()
	a.cluster = df.ForResource(clusterArmorPolicies).Informer()
	if err := a.armor.SetTransform(typed(func() runtime.Object { return &v1alpha1.ArmorPolicy{} })); err != nil {
		return err
	}
	if err := a.cluster.SetTransform(typed(func() runtime.Object { return &v1alpha1.ClusterArmorPolicy{} })); err != nil {
		return err
	}
	kf := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	}))
	a.pods = kf.Core().V1().Pods().Informer()
	if err := a.pods.AddIndexers(cache.Indexers{indexUID: podUID}); err != nil {
		return err
	}
	resolver.pods = a.pods.GetIndexer()
	wake := func(ch chan struct{}) cache.ResourceEventHandler {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { poke(ch) },
			UpdateFunc: func(any, any) { poke(ch) },
			DeleteFunc: func(any) { poke(ch) },
		}
	}
	for _, inf := range []cache.SharedIndexInformer{a.armor, a.cluster} {
		// A policy's status changes (the aggregator writes it) do not change what it
		// compiles to: only a new generation is a change.
		if _, err := inf.AddEventHandler(specChanges(wake(a.policyChanged))); err != nil {
			return err
		}
	}
	if _, err := a.pods.AddEventHandler(wake(a.podChanged)); err != nil {
		return err
	}
	// A pod that leaves the node takes its denial counters with it.
	if _, err := a.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok {
			a.metrics.forgetPod(pod.Namespace, pod.Name)
		}
	}}); err != nil {
		return err
	}

	// The NRI plugin is created here and connected before the first policy is applied
	// (below), so that no container of a sandboxed pod passes its AppArmor profile
	// without getting the hook: at a node's boot the profiles are not in the kernel
	// until this enforcer loads them, and the runtime fails the pods' containers until
	// then.
	if cfg.NRI.Hook.Path != "" {
		n := cfg.NRI
		n.Hook.Socket = cmp.Or(n.Hook.Socket, cfg.Socket)
		n.Hook.Timeout = cmp.Or(n.Hook.Timeout, cfg.HookTimeout)
		n.Hook.UnprotectedDir = cmp.Or(n.Hook.UnprotectedDir, cfg.UnprotectedDir)
		n.Observer = nriObserver{a}
		n.Logger = log
		if a.nri, err = nri.New(n); err != nil {
			return err
		}
	}

	httpAddr, stopHTTP, err := a.serveHTTP()
	if err != nil {
		return err
	}
	defer stopHTTP()

	if cfg.PodEventBurst > 0 {
		if err := broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
			return fmt.Errorf("kube: events: %w", err)
		}
	}
	df.Start(ctx.Done())
	kf.Start(ctx.Done())
	log.Info("waiting for the policy and pod caches", "node", cfg.NodeName)
	if !cache.WaitForCacheSync(ctx.Done(), a.armor.HasSynced, a.cluster.HasSynced, a.pods.HasSynced) {
		return fmt.Errorf("kube: caches did not sync: %w", ctx.Err())
	}
	opts, err := cluster.CompileOptions(ctx, kube, cfg.APIServer, cfg.ClusterCIDRs)
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	opts.Backends = a.metrics.timed(opts.Backends)

	// The loops below end with ctx, or with this function if it fails first.
	loops := sync.WaitGroup{}
	defer loops.Wait()
	ctx, stopLoops := context.WithCancel(ctx)
	defer stopLoops()
	if a.nri != nil {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := a.nri.Run(ctx); err != nil {
				log.Error("NRI plugin stopped", "error", err)
			}
		}()
		// Until the socket below accepts requests, the hooks the plugin injects
		// refuse their containers (or, set to allow, record them for a late
		// registration): the runtime creates none without asking. The policies load
		// only after the runtime's synchronization is answered: a runtime drops a
		// plugin that answers late (containerd after 2 s), and compiling and loading
		// on a busy node could delay the answer that much.
		a.waitNRI(ctx)
	}
	if cfg.ContainerdSocket != "" {
		loops.Add(1)
		go func() {
			defer loops.Done()
			err := containerd.Follow(ctx, containerd.Config{Socket: cfg.ContainerdSocket, Logger: log,
				Subscribed: func() { poke(a.podChanged) },
				Started: func(s containerd.TaskStart) {
					if name, ok := s.KubernetesContainer(); ok {
						a.started.add(s.ContainerID, name)
					}
					poke(a.podChanged)
				}})
			if err != nil && ctx.Err() == nil {
				log.Error("following containerd's events stopped", "error", err)
			}
		}()
	}

	// Every policy in place before the first hook is answered.
	a.applyPolicies(ctx, opts)
	if a.enf != nil {
		a.reg.AdoptUnprotected(ctx, cfg.UnprotectedDir)
	}
	a.reconcile(ctx)

	var readers sync.WaitGroup
	if a.enf != nil {
		ch, err := a.enf.Events(ctx)
		if err != nil {
			return err
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ev := range ch {
				a.write(a.record(ev))
			}
		}()
	}
	if audit != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			audit.stopped = func(err error) {
				log.Error("reading the audit log stopped: AppArmor decisions are no longer reported", "error", err)
				a.metrics.setFeature("apparmor_audit", false)
			}
			for text := range audit.records(ctx) {
				if r, ok := a.recordAppArmor(text); ok {
					a.write(r)
				}
			}
		}()
	}

	srv, err := hook.Listen(hook.ServerConfig{Socket: cfg.Socket, Handler: a.reg, Timeout: cfg.HookTimeout, Logger: log})
	if err != nil {
		return err
	}
	a.ready.Store(true)
	log.Info("enforcer ready", "node", cfg.NodeName, "socket", srv.Addr(), "http", httpAddr, "profiles", a.manager.IDs())
	if cfg.Ready != nil {
		cfg.Ready(httpAddr)
	}

	loops.Add(1)
	go func() {
		defer loops.Done()
		if err := status.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("node status writer stopped", "error", err)
		}
	}()
	loops.Add(2)
	go func() {
		defer loops.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.policyChanged:
				a.applyPolicies(ctx, opts)
			}
		}
	}()
	go func() {
		defer loops.Done()
		tick := time.NewTicker(cfg.ReconcileInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-a.podChanged:
			}
			a.reconcile(ctx)
		}
	}()

	err = srv.Serve(ctx)
	a.ready.Store(false)
	loops.Wait()
	readers.Wait()
	log.Info("enforcer stopped; every profile and registration stays in place")
	return err
}

// applyPolicies compiles every policy and applies them to the node.
func (a *agent) applyPolicies(ctx context.Context, opts compile.Options) {
	start := time.Now()
	compiled, meta, failed := compileAll(sources(a.armor.GetStore(), a.cluster.GetStore()), opts)
	applied := a.manager.Apply(ctx, compiled)
	rulesets := make(map[string]*ruleset.RuleSet, len(compiled))
	for _, c := range compiled {
		rulesets[c.Result.RuleSet.ProfileID] = c.Result.RuleSet
	}
	results := make([]PolicyResult, 0, len(applied)+len(failed))
	for _, r := range applied {
		pr := meta[r.ProfileID]
		pr.Enforcers = r.Enforcers
		results = append(results, pr)
	}
	for _, f := range failed {
		a.log.Error("policy does not compile on this node", "policy", fmt.Sprintf("%s %s/%s", f.Kind, f.Namespace, f.Name), "error", f.CompileError)
		results = append(results, f)
	}
	a.metrics.observeCompileErrors(failed)
	a.metrics.observeApply(results, time.Since(start))
	a.mu.Lock()
	a.results = results
	a.rulesets = rulesets
	a.mu.Unlock()
	a.log.Debug("policies applied", "policies", len(results), "took", time.Since(start).Round(time.Millisecond))
	if a.cfg.Results != nil {
		a.cfg.Results(results)
	}
	// A profile that is now loaded may let a container the hook refused be registered.
	poke(a.podChanged)
}

// poke wakes the loop that waits on ch, unless a wake-up is already pending.
func poke(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// write writes a record to the event log, if there is one.
func (a *agent) write(r event.Record) {
	if a.cfg.Events == nil {
		return
	}
	if err := a.cfg.Events.Write(r); err != nil {
		a.log.Error("write event", "error", err)
	}
}

// record is the event record of a BPF decision, with its container's pod and its
// policy; a denial also becomes a Kubernetes Event on the pod, within its budget, and
// is counted for the pod.
func (a *agent) record(ev bpf.Event) event.Record {
	r := event.FromBPF(ev.Event, ev.Profile, ev.Rule, ev.PathText, ev.Address)
	r.Container = a.reg.ContainerOf(r.MountNamespace)
	ref, ok := a.resolver.containerPod(r.Container)
	a.place(&r, ref, ok)
	return r
}

// recordAppArmor is the event record of an audit record of AppArmor, like record's of
// a BPF decision; ok is false for records that are not decisions of a podarmor profile.
// AppArmor does not name the rule or the container: the rule is the policy's that
// covers the operation (event.Attribute), and the container is found from the
// process's cgroup, which names the container and its pod (or, failing that, its
// mount namespace, if registered with BPF). A process that has exited by the time the
// record is read leaves its record without a pod.
func (a *agent) recordAppArmor(text string) (event.Record, bool) {
	r, ok := event.FromAppArmor(text)
	if !ok {
		return r, false
	}
	a.mu.Lock()
	rs := a.rulesets[r.Profile]
	a.mu.Unlock()
	event.Attribute(rs, &r)
	var ref podRef
	found := false
	procDir := filepath.Join(a.cfg.Proc, strconv.FormatUint(uint64(r.PID), 10))
	if data, err := os.ReadFile(filepath.Join(procDir, "cgroup")); err == nil {
		if id, uid, isCtr := parseCgroup(data); isCtr {
			r.Container = id
			ref, found = a.resolver.containerPod(id)
			if !found {
				ref, found = a.podOfContainer(uid, id)
			}
		}
	}
	if ns, err := hook.MountNamespace(filepath.Join(procDir, "ns", "mnt")); err == nil {
		r.MountNamespace = ns
		if r.Container == "" {
			r.Container = a.reg.ContainerOf(ns)
			ref, found = a.resolver.containerPod(r.Container)
		}
	}
	a.place(&r, ref, found)
	return r, true
}

// podOfContainer is the pod, from the node's pod cache, of a container its cgroup
// names, for containers the hook did not resolve.
func (a *agent) podOfContainer(uid types.UID, id string) (podRef, bool) {
	objs, err := a.pods.GetIndexer().ByIndex(indexUID, string(uid))
	if err != nil || len(objs) == 0 {
		return podRef{}, false
	}
	pod := objs[0].(*corev1.Pod)
	return podRef{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, Container: containerIDs(pod)[id]}, true
}

// place completes a record with its node, policy and, when known, the container's pod
// (ref); a denial of a pod's container becomes a Kubernetes Event on the pod, within
// its budget, and is counted for the pod while the pod is on the node.
func (a *agent) place(r *event.Record, ref podRef, known bool) {
	r.Node = a.cfg.NodeName
	a.mu.Lock()
	for _, pr := range a.results {
		if pr.ProfileID == r.Profile {
			r.Policy = fmt.Sprintf("%s %s", pr.Kind, strings.TrimPrefix(pr.Namespace+"/"+pr.Name, "/"))
			break
		}
	}
	a.mu.Unlock()
	if !known {
		return
	}
	r.Namespace, r.Pod, r.ContainerName = ref.Namespace, ref.Name, ref.Container
	if a.cfg.PodEventBurst > 0 {
		a.podEvents.record(ref, *r)
	}
	if r.Action == v1alpha1.ActionEnforce {
		// A pod already gone from the node's cache would leave a series nobody deletes.
		if _, exists, err := a.pods.GetIndexer().GetByKey(ref.Namespace + "/" + ref.Name); err == nil && exists {
			a.metrics.countPodDenial(ref.Namespace, ref.Name, r.Policy)
		}
	}
}

// openAudit joins the kernel's audit log for AppArmor's decisions, and says why not
// when it cannot deliver them.
func (a *agent) openAudit() (*auditLog, error) {
	if in, ok := inInitialNetNamespace(a.cfg.Proc); ok && !in {
		return nil, errors.New("the enforcer is not in the node's network namespace, the only one the kernel sends audit records to (run its pod with hostNetwork: true)")
	}
	return openAuditLog(func() {
		a.metrics.auditLost.Inc()
		a.log.Warn("audit records lost: the audit socket's buffer was full; some AppArmor decisions are not reported")
	})
}

// reconcile registers the node's sandboxed containers that are not registered and
// removes registrations of namespaces that are gone.
func (a *agent) reconcile(ctx context.Context) {
	if a.enf == nil {
		return
	}
	scanned := time.Now()
	found, err := scanProc(a.cfg.Proc)
	if err != nil {
		a.log.Error("reconcile: scan processes", "error", err)
		return
	}
	var running []registrar.Running
	for _, c := range found {
		objs, err := a.pods.GetIndexer().ByIndex(indexUID, string(c.PodUID))
		if err != nil || len(objs) == 0 {
			continue // a pod of another node's view, or gone
		}
		pod := objs[0].(*corev1.Pod)
		name, ok := containerIDs(pod)[c.ID]
		if !ok {
			name, ok = a.started.name(c.ID)
		}
		if !ok {
			continue // the pause container, or one the kubelet has not reported yet
		}
		running = append(running, registrar.Running{
			Request: hook.Request{Op: hook.OpRegister, ContainerID: c.ID, PID: c.PID, Annotations: podAnnotations(pod, name)},
			Started: c.Started,
		})
	}
	ids := map[string]bool{}
	pods := map[types.UID]bool{}
	for _, c := range found {
		ids[c.ID] = true
		pods[c.PodUID] = true
	}
	a.resolver.forget(func(id string) bool { return ids[id] || a.reg.Has(id) }, scanned)
	a.started.forget(ids, scanned)
	a.podEvents.forget(pods)
	got, err := a.reg.Reconcile(ctx, running)
	if err != nil {
		a.log.Error("reconcile", "error", err)
		return
	}
	for _, id := range got.Registered {
		a.log.Warn("reconcile: container was running unregistered; registered now", "container", id)
	}
	if a.nri != nil {
		if id, ok := ignoredPlugin(a.nri, got.Registered); ok {
			a.log.Error("NRI: the runtime made a container without asking the plugin, though it is connected: the runtime must have dropped it (a late answer to its synchronization); reconnecting",
				"container", id)
			a.nri.Reconnect()
		}
	}
	for id, err := range got.Failed {
		a.log.Error("reconcile: sandboxed container is not registered", "container", id, "error", err)
	}
	if n := int64(got.Unreadable); a.unreadable.Swap(n) != n && n > 0 {
		a.log.Warn("reconcile: the mount namespaces of some processes cannot be read; registrations of gone containers are kept until all can",
			"processes", n)
	}
	if len(got.Removed) > 0 {
		a.log.Info("reconcile: registrations of gone containers removed", "mntns", got.Removed)
	}
	if len(got.Adopted) > 0 {
		a.log.Info("reconcile: registrations of a previous enforcer adopted", "containers", got.Adopted)
	}
}

// nriSession is what ignoredPlugin asks of the NRI plugin.
type nriSession interface {
	Connected() bool
	Seen(id string) bool
}

// ignoredPlugin tells whether a container registered late proves that the runtime
// creates containers without asking the connected plugin: one the runtime never told
// the plugin of since it connected (not in its synchronization, not created nor started
// since), so created after the synchronization without it. It returns that container.
func ignoredPlugin(p nriSession, late []string) (string, bool) {
	if !p.Connected() {
		return "", false
	}
	for _, id := range late {
		if !p.Seen(id) {
			return id, true
		}
	}
	return "", false
}

// waitNRI waits until the NRI plugin is connected to the runtime, for at most
// Config.NRIWait: a runtime that does not answer delays the enforcer's start by that
// much, then the enforcer goes on (and is not ready until the plugin connects).
func (a *agent) waitNRI(ctx context.Context) {
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(a.cfg.NRIWait)
	defer timeout.Stop()
	for !a.nri.Connected() {
		select {
		case <-ctx.Done():
			return
		case <-timeout.C:
			a.log.Warn("NRI: not connected to the runtime yet; loading the policies anyway (the enforcer is not ready until it connects)",
				"waited", a.cfg.NRIWait)
			return
		case <-tick.C:
		}
	}
	a.log.Info("NRI: connected before the policies are loaded", "waited", time.Since(start).Round(time.Millisecond))
}

// serveHTTP serves /metrics, /healthz and /readyz.
func (a *agent) serveHTTP() (string, func(), error) {
	if a.cfg.Listen == "-" {
		return "", func() {}, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), a.metrics)
	if a.enf != nil {
		reg.MustRegister(bpf.NewCollector(a.enf))
	}
	if a.nri != nil {
		plugin := a.nri
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "podarmor_enforcer_nri_connected",
				Help: "1 while the NRI plugin is connected to the container runtime (the runtime creates containers without the hook while it is not), 0 otherwise.",
			}, func() float64 {
				if plugin.Connected() {
					return 1
				}
				return 0
			}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "podarmor_enforcer_nri_connections_total",
				Help: "Connections of the NRI plugin to the container runtime: one at start, one more after each runtime restart.",
			}, func() float64 { return float64(plugin.Connections()) }),
		)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: loading policies", http.StatusServiceUnavailable)
			return
		}
		if a.nri != nil && !a.nri.Connected() {
			http.Error(w, "not ready: the NRI plugin is not connected to the runtime: new containers of sandboxed pods get no hook",
				http.StatusServiceUnavailable)
			return
		}
		// Ready: the node enforces what it can. What it cannot is said here, and in
		// the node's ArmorNodeStatus, which the webhook's gate reads.
		fmt.Fprintln(w, "ok")
		for _, m := range a.missing {
			fmt.Fprintln(w, m)
		}
	})
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("kube: listen %s: %w", a.cfg.Listen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// nriObserver reconciles when the runtime reports containers: at every connection
// (containers created while the plugin was away have no hook) and at every start.
type nriObserver struct{ a *agent }

func (o nriObserver) poke() { poke(o.a.podChanged) }

func (o nriObserver) Synchronized([]nri.Container)   { o.poke() }
func (o nriObserver) ContainerStarted(nri.Container) { o.poke() }
func (o nriObserver) ContainerStopped(nri.Container) {}
func (o nriObserver) ContainerRemoved(nri.Container) {}

// specChanges passes on additions, deletions, and updates that change an object's
// generation or UID.
func specChanges(h cache.ResourceEventHandler) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { h.OnAdd(obj, false) },
		UpdateFunc: func(oldObj, newObj any) {
			o, okOld := oldObj.(metav1.Object)
			n, okNew := newObj.(metav1.Object)
			if okOld && okNew && o.GetGeneration() == n.GetGeneration() && o.GetUID() == n.GetUID() {
				return
			}
			h.OnUpdate(oldObj, newObj)
		},
		DeleteFunc: h.OnDelete,
	}
}

// Pods are indexed by UID, which the cgroup of their containers names.
const indexUID = "uid"

func podUID(obj any) ([]string, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return []string{string(p.UID)}, nil
	}
	return nil, nil
}
