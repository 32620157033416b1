package framework

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/deploy/crds"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Timeouts of starting and stopping a control plane. kube-apiserver is usually ready in
// 5-15 s; a loaded 2-core machine running several in parallel takes longer.
const (
	readyTimeout = 90 * time.Second
	stopTimeout  = 15 * time.Second
)

// Options chooses the control plane StartControlPlane runs.
type Options struct {
	// Version is the Kubernetes release, e.g. "v1.37.2"; one of Versions(t). Required.
	Version string
	// APIServerFlags are appended to kube-apiserver's command line and override the
	// defaults (see NewSetup), e.g. "--feature-gates=SomeGate=true".
	APIServerFlags []string
}

// ControlPlane is a running etcd and kube-apiserver with podarmor's CRDs installed.
type ControlPlane struct {
	// Config reaches the API as the admin user (group system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig with the same identity, for kubectl or a
	// binary under test.
	Kubeconfig string
	// Version is the version the server reports (/version's gitVersion), e.g. "v1.37.2".
	Version string
	// Client is a controller-runtime client whose scheme knows the built-in types and
	// podarmor's (ArmorPolicy, ClusterArmorPolicy).
	Client client.Client
	// Clientset is client-go's typed clientset, for what Client does not cover
	// (subresources, discovery).
	Clientset kubernetes.Interface
	// Dir holds the control plane's files and its logs etcd.log and kube-apiserver.log.
	Dir string

	etcd, apiserver *process
	// apiserverArgv starts kube-apiserver again (StartAPIServer); restarts counts the
	// starts after the first, for the log's name.
	apiserverArgv []string
	restarts      int
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after a timeout) and leaves
// etcd and its data: clients are refused until StartAPIServer.
func (cp *ControlPlane) StopAPIServer(t testing.TB) {
	cp.apiserver.stop(t)
}

// StartAPIServer starts kube-apiserver again after StopAPIServer, with the same command
// line (port, etcd, certificates, tokens), and waits until it is ready. Its log is
// kube-apiserver.N.log in Dir. Unlike most helpers it returns its error instead of
// failing the test, so that it can run outside the test's goroutine.
func (cp *ControlPlane) StartAPIServer(t testing.TB) error {
	select {
	case <-cp.apiserver.exited:
	default:
		return errors.New("start kube-apiserver: it is running; StopAPIServer first")
	}
	cp.restarts++
	p, err := startProcess(cp.apiserverArgv, filepath.Join(cp.Dir, fmt.Sprintf("kube-apiserver.%d.log", cp.restarts)))
	if err != nil {
		return err
	}
	t.Cleanup(func() { p.stop(t) })
	cp.apiserver = p
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := waitReady(ctx, cp.Clientset, cp.etcd, p); err != nil {
		return fmt.Errorf("start kube-apiserver again: %w", err)
	}
	return nil
}

// CPUTime returns the CPU time (user and system) etcd and kube-apiserver have used so
// far, under the keys "etcd" and "kube-apiserver": benchmarks read it before and after
// what they measure to tell which process the time went to.
func (cp *ControlPlane) CPUTime() (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for _, p := range []*process{cp.etcd, cp.apiserver} {
		d, err := p.cpuTime()
		if err != nil {
			return nil, err
		}
		out[p.name] = d
	}
	return out, nil
}

// Scheme returns a scheme with the built-in Kubernetes types, CRDs and podarmor's types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // only a programming error makes registration fail
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// StartControlPlane starts etcd and kube-apiserver of opts.Version on free loopback
// ports, with their files in a t.TempDir(), waits for /readyz, installs podarmor's CRDs
// from deploy/crds and waits until they are served. t.Cleanup stops both processes; if
// the test failed, the end of each log is printed first.
//
// The binaries are built by hack/kube-binaries.sh if they are missing (Main builds them
// up front). Under -short it skips the test.
func StartControlPlane(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped under -short")
	}
	if !versionPattern.MatchString(opts.Version) {
		t.Fatalf("StartControlPlane: Version %q is not a Kubernetes release such as v1.37.2", opts.Version)
	}
	// Main has built the binaries already, unless the package has no TestMain; then the
	// build's progress shows with -v.
	bin, err := binaries(opts.Version, testLog{t})
	if err != nil {
		t.Fatal(err)
	}

	// Ports are chosen free but taken only when the processes start, so a parallel test
	// can take one first; then the start is tried again on new ports.
	var cp *ControlPlane
	for attempt := 1; ; attempt++ {
		cp, err = start(t, bin, opts)
		if err == nil || !errors.Is(err, errPortTaken) || attempt == 3 {
			break
		}
		t.Logf("e2e: %v; starting again on other ports", err)
	}
	if err != nil {
		t.Fatalf("start control plane %s: %v", opts.Version, err)
	}
	return cp
}

// testLog writes to the test's log, shown with -v or when the test fails.
type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var errPortTaken = errors.New("a port was taken by another program")

// start makes one attempt at a control plane in a fresh directory. On error, whatever it
// started is stopped again.
func start(t testing.TB, bin string, opts Options) (_ *ControlPlane, err error) {
	dir := t.TempDir()
	setup, err := NewSetup(SetupConfig{Dir: dir, BinDir: bin, Version: opts.Version, APIServerFlags: opts.APIServerFlags})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()

	var started []*process
	defer func() {
		if err != nil { // stop now, not at the end of the test: a retry may follow
			for i := len(started) - 1; i >= 0; i-- {
				started[i].stop(t)
			}
		}
	}()
	for _, argv := range [][]string{setup.Etcd, setup.APIServer} {
		p, err := startProcess(argv, filepath.Join(dir, filepath.Base(argv[0])+".log"))
		if err != nil {
			return nil, err
		}
		started = append(started, p)
		// Cleanups run last-in first-out: the apiserver stops before its etcd.
		t.Cleanup(func() { p.stop(t) })
	}
	etcd, apiserver := started[0], started[1]

	clientset, err := kubernetes.NewForConfig(setup.Config)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, clientset, etcd, apiserver); err != nil {
		return nil, err
	}
	info, err := clientset.Discovery().ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("read server version: %w", err)
	}
	if info.GitVersion != opts.Version {
		return nil, fmt.Errorf("kube-apiserver reports version %q, want %q (is the binary in %s stamped?)", info.GitVersion, opts.Version, bin)
	}
	c, err := client.New(setup.Config, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("make client: %w", err)
	}
	if err := installCRDs(ctx, c); err != nil {
		return nil, err
	}
	return &ControlPlane{
		Config:     setup.Config,
		Kubeconfig: setup.Kubeconfig,
		Version:    info.GitVersion,
		Client:     c,
		Clientset:  clientset,
		Dir:        dir,
		etcd:       etcd,
		apiserver:  apiserver,

		apiserverArgv: setup.APIServer,
	}, nil
}

// process is a started etcd or kube-apiserver.
type process struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{} // closed when the process has exited; then err is set
	err    error
}

func startProcess(argv []string, logPath string) (*process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &process{name: filepath.Base(argv[0]), log: logPath, exited: make(chan struct{})}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout = logFile
	p.cmd.Stderr = logFile
	// Killed with the test binary, even when go test's timeout panics it and no cleanup
	// runs.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	return p, nil
}

// clockTick is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time the process has used so far: user and system time from
// /proc/PID/stat, in steps of clockTick.
func (p *process) cpuTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of %s: %w", p.name, err)
	}
	// The fields after the command name in parentheses, which may hold spaces: state is
	// the first of them, utime the 12th and stime the 13th (proc(5)).
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("cpu time of %s: short /proc stat %q", p.name, s)
	}
	var ticks time.Duration
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time of %s: %w", p.name, err)
		}
		ticks += time.Duration(n)
	}
	return ticks * clockTick, nil
}

// exitError says how a process that exited too early ended, with the end of its log.
func (p *process) exitError() error {
	tail := logTail(p.log, 20)
	err := fmt.Errorf("%s exited: %v\n%s", p.name, p.err, tail)
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("%w: %w", errPortTaken, err)
	}
	return err
}

// stop sends SIGTERM, then SIGKILL if the process is still there after stopTimeout.
// If the test failed, the end of the log is logged first.
func (p *process) stop(t testing.TB) {
	if t.Failed() {
		t.Logf("e2e: end of %s:\n%s", p.log, logTail(p.log, 40))
	}
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		t.Logf("e2e: %s did not stop within %s of SIGTERM; killing it", p.name, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func logTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// waitReady polls /readyz until it answers ok, failing early if a process exits.
func waitReady(ctx context.Context, clientset kubernetes.Interface, procs ...*process) error {
	var last error
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range procs {
			select {
			case <-p.exited:
				return p.exitError()
			default:
			}
		}
		body, err := clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && string(body) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w (last answer: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// installCRDs creates every CRD of deploy/crds and waits until each is established and
// its resource can be listed.
func installCRDs(ctx context.Context, c client.Client) error {
	var names []string
	for _, name := range crds.Names() {
		data, err := fs.ReadFile(crds.Files, name)
		if err != nil {
			return err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(data, crd); err != nil {
			return fmt.Errorf("crd %s: %w", name, err)
		}
		if err := c.Create(ctx, crd); err != nil {
			return fmt.Errorf("create crd %s: %w", crd.Name, err)
		}
		names = append(names, crd.Name)
	}
	lists := []client.ObjectList{&v1alpha1.ArmorPolicyList{}, &v1alpha1.ClusterArmorPolicyList{}}
	err := poll(ctx, func(ctx context.Context) (bool, error) {
		for _, name := range names {
			if !crdEstablished(ctx, c, name) {
				return false, nil
			}
		}
		// Established means served; the client's discovery may still need a moment.
		for _, l := range lists {
			if err := c.List(ctx, l); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("wait for podarmor's CRDs: %w", err)
	}
	return nil
}

func crdEstablished(ctx context.Context, c client.Client, name string) bool {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
		return false
	}
	for _, cond := range crd.Status.Conditions {
		if cond.Type == apiextensionsv1.Established {
			return cond.Status == apiextensionsv1.ConditionTrue
		}
	}
	return false
}

// poll calls cond every 200 ms until it is done, returns an error, or ctx ends.
func poll(ctx context.Context, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		done, err := cond(ctx)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
