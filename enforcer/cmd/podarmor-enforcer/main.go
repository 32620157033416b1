// Command podarmor-enforcer is podarmor's node agent. Its subcommands:
//
//	podarmor-enforcer oci-hook       the OCI runtime hook (createRuntime, poststop): registers
//	                                 the container with the enforcer before it runs
//	podarmor-enforcer standalone     the enforcer without Kubernetes: policies from files,
//	                                 containers mapped by their podarmor.io/profile annotation
//	podarmor-enforcer kubernetes     the DaemonSet's enforcer: policies from the API server,
//	                                 containers mapped to profiles by their pod's label
//	podarmor-enforcer try-guest      the guest side of `podarmor try`, inside its VM
//	podarmor-enforcer install-hook   copy this binary to where the runtime runs the hook
//	                                 (the DaemonSet's init container; the image has no shell)
//
// Configuration comes from flags, PODARMOR_* environment variables (PODARMOR_SOCKET for
// --socket, PODARMOR_ON_UNAVAILABLE for --on-unavailable) and an optional file
// (--config); see docs/enforcer.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podarmor/podarmor/enforcer/apparmor"
	"github.com/podarmor/podarmor/enforcer/bpf"
	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/hook"
	"github.com/podarmor/podarmor/enforcer/kube"
	"github.com/podarmor/podarmor/enforcer/nri"
	"github.com/podarmor/podarmor/enforcer/seccomp"
	"github.com/podarmor/podarmor/enforcer/standalone"
	"github.com/podarmor/podarmor/enforcer/trial"
	"github.com/podarmor/podarmor/policies/cluster"
	"github.com/podarmor/podarmor/policies/compile"
)

// Configuration keys: flag names, and with PODARMOR_ and dashes as underscores, the
// environment variables.
const (
	keyConfig           = "config"
	keyLogFormat        = "log-format"
	keyLogLevel         = "log-level"
	keySocket           = "socket"
	keyTimeout          = "timeout"
	keyOnUnavailable    = "on-unavailable"
	keyUnprotectedDir   = "unprotected-dir"
	keyPolicy           = "policy"
	keyContainer        = "container"
	keyEvents           = "events"
	keyEventsMaxSize    = "events-max-size-mb"
	keyEventsMaxBackups = "events-max-backups"
	keyEventsMaxAge     = "events-max-age-days"
	keyEventsCompress   = "events-compress"
	keyPinDir           = "pin-dir"
	keySeccompRoot      = "seccomp-root"
	keyAppArmorDir      = "apparmor-dir"
	keyAppArmorParser   = "apparmor-parser"
	keyAPIServer        = "apiserver-address"
	keyClusterCIDRs     = "cluster-cidr"
	keyUnconfined       = "unconfined"
	keyPrivileged       = "privileged"
	keyMount            = "mount"
	keySetup            = "setup"
	keyWithout          = "without-enforcer"
	keyReportPrefix     = "report-prefix"
	keyVerbose          = "verbose"
	keyDir              = "dir"
	keyNodeName         = "node-name"
	keyKubeconfig       = "kubeconfig"
	keyPodWait          = "pod-wait"
	keyReconcile        = "reconcile-interval"
	keyListen           = "listen"
	keyProc             = "proc"
	keyNRIHook          = "nri-hook-path"
	keyNRISocket        = "nri-socket"
	keyContainerd       = "containerd-socket"
	keyPodEventBurst    = "pod-event-burst"
	keyPodEventInterval = "pod-event-interval"
	keyBPFStats         = "bpf-stats"
)

// common is the configuration every subcommand has.
type common struct {
	LogFormat string `mapstructure:"log-format"`
	LogLevel  string `mapstructure:"log-level"`
}

// hookConfig is oci-hook's.
type hookConfig struct {
	common         `mapstructure:",squash"`
	Socket         string        `mapstructure:"socket"`
	Timeout        time.Duration `mapstructure:"timeout"`
	OnUnavailable  string        `mapstructure:"on-unavailable"`
	UnprotectedDir string        `mapstructure:"unprotected-dir"`
}

// compileConfig holds the cluster facts policies may need.
type compileConfig struct {
	APIServer    []string `mapstructure:"apiserver-address"`
	ClusterCIDRs []string `mapstructure:"cluster-cidr"`
}

func (c compileConfig) options() (compile.Options, error) {
	return cluster.WithAddresses(compile.Options{}, c.APIServer, c.ClusterCIDRs)
}

// standaloneConfig is standalone's.
type standaloneConfig struct {
	common        `mapstructure:",squash"`
	compileConfig `mapstructure:",squash"`
	nodeConfig    `mapstructure:",squash"`
	Policies      []string          `mapstructure:"policy"`
	Containers    map[string]string `mapstructure:"container"`
}

// nodeConfig is what both enforcer modes (standalone, kubernetes) take: the hook
// socket, where events go, and where each enforcer keeps its state.
type nodeConfig struct {
	Socket           string        `mapstructure:"socket"`
	Timeout          time.Duration `mapstructure:"timeout"`
	Events           string        `mapstructure:"events"`
	EventsMaxSizeMB  int           `mapstructure:"events-max-size-mb"`
	EventsMaxBackups int           `mapstructure:"events-max-backups"`
	EventsMaxAgeDays int           `mapstructure:"events-max-age-days"`
	EventsCompress   bool          `mapstructure:"events-compress"`
	PinDir           string        `mapstructure:"pin-dir"`
	SeccompRoot      string        `mapstructure:"seccomp-root"`
	AppArmorDir      string        `mapstructure:"apparmor-dir"`
	AppArmorParser   string        `mapstructure:"apparmor-parser"`
	UnprotectedDir   string        `mapstructure:"unprotected-dir"`
}

func (c nodeConfig) appArmor() apparmor.Config {
	return apparmor.Config{Parser: c.AppArmorParser, Dir: c.AppArmorDir}
}

// eventLogFlags are the flags of event.LogConfig's fields.
var eventLogFlags = map[string]string{
	"Path":       keyEvents,
	"MaxSizeMB":  keyEventsMaxSize,
	"MaxBackups": keyEventsMaxBackups,
	"MaxAgeDays": keyEventsMaxAge,
}

// eventLog is the event log's configuration, checked; an error names the flag.
func (c nodeConfig) eventLog() (event.LogConfig, error) {
	lc := event.LogConfig{
		Path:       c.Events,
		MaxSizeMB:  c.EventsMaxSizeMB,
		MaxBackups: c.EventsMaxBackups,
		MaxAgeDays: c.EventsMaxAgeDays,
		Compress:   c.EventsCompress,
	}
	if err := lc.Validate(); err != nil {
		return lc, flagError(err)
	}
	return lc, nil
}

// flagError words an event.SettingError with the flag of its field.
func flagError(err error) error {
	var se *event.SettingError
	if errors.As(err, &se) {
		return fmt.Errorf("--%s %v: %s", eventLogFlags[se.Field], se.Value, se.Reason)
	}
	return err
}

// nodeFlags are nodeConfig's flags.
func nodeFlags(fs *pflag.FlagSet, seccompRoot string) {
	fs.String(keySocket, hook.DefaultSocket, "the hook socket to serve")
	fs.Duration(keyTimeout, hook.DefaultTimeout, "bound of one hook request")
	fs.String(keyEvents, event.Stdout, "where events go as JSON lines: an absolute file path (rotated by size), or - for stdout")
	fs.Int(keyEventsMaxSize, event.DefaultMaxSizeMB, "with a file: rotate it when the next line would take it past this many MiB (at least 1)")
	fs.Int(keyEventsMaxBackups, event.DefaultMaxBackups, "with a file: rotated files to keep, oldest removed first (0: all)")
	fs.Int(keyEventsMaxAge, 0, "with a file: remove rotated files older than this many days (0: no age limit)")
	fs.Bool(keyEventsCompress, false, "with a file: gzip rotated files")
	fs.String(keyPinDir, bpf.DefaultPinDir, "bpffs directory of the BPF enforcer's pinned programs and maps")
	fs.String(keySeccompRoot, seccomp.DefaultRoot, seccompRoot+": profiles are written to ROOT/podarmor/<id>.json")
	fs.String(keyAppArmorDir, apparmor.DefaultDir, "where AppArmor profile texts are written before loading")
	fs.String(keyAppArmorParser, "", "apparmor_parser binary (default: from PATH)")
	fs.String(keyUnprotectedDir, hook.DefaultUnprotectedDir, "where the hook records containers it let run unregistered; they are registered at start")
}

// kubernetesConfig is kubernetes's.
type kubernetesConfig struct {
	common            `mapstructure:",squash"`
	compileConfig     `mapstructure:",squash"`
	nodeConfig        `mapstructure:",squash"`
	NodeName          string        `mapstructure:"node-name"`
	Kubeconfig        string        `mapstructure:"kubeconfig"`
	PodWait           time.Duration `mapstructure:"pod-wait"`
	ReconcileInterval time.Duration `mapstructure:"reconcile-interval"`
	Listen            string        `mapstructure:"listen"`
	Proc              string        `mapstructure:"proc"`
	NRIHookPath       string        `mapstructure:"nri-hook-path"`
	NRISocket         string        `mapstructure:"nri-socket"`
	ContainerdSocket  string        `mapstructure:"containerd-socket"`
	OnUnavailable     string        `mapstructure:"on-unavailable"`
	PodEventBurst     int           `mapstructure:"pod-event-burst"`
	PodEventInterval  time.Duration `mapstructure:"pod-event-interval"`
	BPFStats          bool          `mapstructure:"bpf-stats"`
}

// installHookConfig is install-hook's.
type installHookConfig struct {
	common `mapstructure:",squash"`
	Dir    string `mapstructure:"dir"`
}

// tryConfig is try-guest's.
type tryConfig struct {
	common          `mapstructure:",squash"`
	compileConfig   `mapstructure:",squash"`
	Policy          string   `mapstructure:"policy"`
	Unconfined      bool     `mapstructure:"unconfined"`
	Privileged      bool     `mapstructure:"privileged"`
	Mounts          []string `mapstructure:"mount"`
	Setup           []string `mapstructure:"setup"`
	WithoutEnforcer bool     `mapstructure:"without-enforcer"`
	OnUnavailable   string   `mapstructure:"on-unavailable"`
	ReportPrefix    string   `mapstructure:"report-prefix"`
	Verbose         bool     `mapstructure:"verbose"`
	Dir             string   `mapstructure:"dir"`
}

// subcommand is one of the binary's modes.
type subcommand struct {
	summary string
	flags   func(fs *pflag.FlagSet)
	// run gets the configuration and the arguments after the flags, and returns the
	// process's exit code.
	run func(ctx context.Context, v *viper.Viper, args []string) int
}

func commonFlags(fs *pflag.FlagSet, logFormat string) {
	fs.String(keyConfig, "", "configuration file (YAML); flags and PODARMOR_* variables override it")
	fs.String(keyLogFormat, logFormat, "log format: json or text")
	fs.String(keyLogLevel, "info", "log level: debug, info, warn or error")
}

func compileFlags(fs *pflag.FlagSet) {
	fs.StringSlice(keyAPIServer, nil, "address of the cluster's kubernetes Service, for rules that use $APISERVER (repeatable)")
	fs.StringSlice(keyClusterCIDRs, nil, "pod or service CIDR of the cluster, for rules that use $CLUSTER_CIDRS (repeatable)")
}

var subcommands = map[string]subcommand{
	"oci-hook": {
		summary: "the OCI runtime hook: register the container (state on stdin) with the enforcer before it runs",
		flags: func(fs *pflag.FlagSet) {
			commonFlags(fs, "text")
			fs.String(keySocket, hook.DefaultSocket, "the enforcer's hook socket")
			fs.Duration(keyTimeout, hook.DefaultTimeout, "how long to wait for the enforcer's answer")
			fs.String(keyOnUnavailable, string(hook.Refuse), "when the enforcer cannot be reached: refuse (the container does not start) or allow (it runs without its BPF registration, logged and recorded)")
			fs.String(keyUnprotectedDir, hook.DefaultUnprotectedDir, "where containers allowed to run unregistered are recorded, for the enforcer to register when it is back")
		},
		run: runHook,
	},
	"standalone": {
		summary: "enforce policies from files; containers name their profile in the OCI annotation podarmor.io/profile",
		flags: func(fs *pflag.FlagSet) {
			commonFlags(fs, "json")
			compileFlags(fs)
			nodeFlags(fs, "seccomp root")
			fs.StringArray(keyPolicy, nil, "policy file (ArmorPolicy or ClusterArmorPolicy, YAML or JSON; repeatable)")
			fs.StringToString(keyContainer, nil, "CONTAINER_ID=PROFILE_ID: the profile of a container, before its annotation (repeatable)")
		},
		run: runStandalone,
	},
	"kubernetes": {
		summary: "the node agent of the DaemonSet: policies from the API server, containers by their pod's profile label, reconciliation, metrics",
		flags: func(fs *pflag.FlagSet) {
			commonFlags(fs, "json")
			compileFlags(fs)
			fs.String(keyNodeName, "", "the node this enforcer runs on (from the downward API: spec.nodeName); required")
			fs.String(keyKubeconfig, "", "kubeconfig file; empty uses the in-cluster configuration")
			nodeFlags(fs, "the kubelet's seccomp root")
			fs.Duration(keyPodWait, kube.DefaultPodWait, "how long a hook waits for a pod the informer has not seen before asking the API server")
			fs.Duration(keyReconcile, kube.DefaultReconcileInterval, "period of the reconciliation of registrations with the running containers")
			fs.String(keyListen, kube.DefaultListen, "address of /metrics, /healthz and /readyz; - for none")
			fs.String(keyProc, "/proc", "where the node's procfs is mounted")
			fs.String(keyNRIHook, "", "podarmor-enforcer's path on the node: runs the NRI plugin that injects the OCI hook (this binary's oci-hook) into the containers of sandboxed pods (empty: no NRI plugin)")
			fs.String(keyNRISocket, nri.DefaultSocket, "the container runtime's NRI socket")
			fs.String(keyContainerd, "", "containerd's gRPC socket (e.g. /run/containerd/containerd.sock): follow its task starts and reconcile at each, the fallback where containerd runs without NRI (empty: do not follow)")
			fs.String(keyOnUnavailable, string(hook.Refuse), "the injected hook's --on-unavailable: refuse or allow")
			fs.Int(keyPodEventBurst, kube.DefaultEventBurst, "denials of one rule in one pod that become Kubernetes Events at once; then one per --pod-event-interval (negative: no Events)")
			fs.Duration(keyPodEventInterval, kube.DefaultEventInterval, "after the burst, one Event per pod and rule per interval")
			fs.Bool(keyBPFStats, false, "turn on the kernel's run-time statistics of BPF programs (BPF_ENABLE_STATS) while the enforcer runs and export each program's runs and run time; costs every BPF program on the node two clock reads per run")
		},
		run: runKubernetes,
	},
	"install-hook": {
		summary: "copy this binary to DIR/podarmor-enforcer (atomically), for the runtime to run as the OCI hook",
		flags: func(fs *pflag.FlagSet) {
			commonFlags(fs, "text")
			fs.String(keyDir, "", "the directory, as this process sees it; required")
		},
		run: runInstallHook,
	},
	"try-guest": {
		summary: "inside the VM of `podarmor try`: run a command in a pod-like runc container under the policy",
		flags: func(fs *pflag.FlagSet) {
			commonFlags(fs, "text")
			compileFlags(fs)
			fs.String(keyPolicy, "", "policy file")
			fs.Bool(keyUnconfined, false, "run the container without the policy")
			fs.Bool(keyPrivileged, false, "run the container privileged")
			fs.StringArray(keyMount, nil, "SRC:DST[:ro]: bind the VM's SRC at DST in the container (repeatable)")
			fs.StringArray(keySetup, nil, "shell command to run in the VM before the container starts (repeatable)")
			fs.Bool(keyWithout, false, "do not start the enforcer: see what the hook does without it")
			fs.String(keyOnUnavailable, string(hook.Refuse), "the hook's setting: refuse or allow")
			fs.String(keyReportPrefix, "", "prefix of machine-readable report lines (for podarmor try)")
			fs.Bool(keyVerbose, false, "report the enforcer's log as it goes")
			fs.String(keyDir, trial.DefaultDir, "working directory")
		},
		run: runTry,
	},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: podarmor-enforcer SUBCOMMAND [flags]")
	for _, name := range []string{"oci-hook", "standalone", "kubernetes", "install-hook", "try-guest"} {
		fmt.Fprintf(w, "  %-11s %s\n", name, subcommands[name].summary)
	}
	fmt.Fprintln(w, "`podarmor-enforcer SUBCOMMAND --help` lists a subcommand's flags.")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	sc, ok := subcommands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "podarmor-enforcer: unknown subcommand %q\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	v, args, err := loadConfig(name, sc, os.Args[2:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "podarmor-enforcer %s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(sc.run(ctx, v, args))
}

// loadConfig parses a subcommand's flags into the one viper of the process.
func loadConfig(name string, sc subcommand, args []string) (*viper.Viper, []string, error) {
	fs := pflag.NewFlagSet("podarmor-enforcer "+name, pflag.ContinueOnError)
	sc.flags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	v := viper.New()
	v.SetEnvPrefix("PODARMOR")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(fs); err != nil {
		return nil, nil, err
	}
	if file := v.GetString(keyConfig); file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return nil, nil, fmt.Errorf("read config %s: %w", file, err)
		}
	}
	return v, fs.Args(), nil
}

func newLogger(c common) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("--%s %q: %w", keyLogLevel, c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch c.LogFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--%s %q: want json or text", keyLogFormat, c.LogFormat)
}

// decode unmarshals the configuration and makes the logger; it prints what is wrong.
func decode[T any](v *viper.Viper, name string, logCfg func(*T) common) (T, *slog.Logger, bool) {
	var c T
	if err := v.Unmarshal(&c); err != nil {
		fmt.Fprintf(os.Stderr, "podarmor-enforcer %s: configuration: %v\n", name, err)
		return c, nil, false
	}
	log, err := newLogger(logCfg(&c))
	if err != nil {
		fmt.Fprintf(os.Stderr, "podarmor-enforcer %s: %v\n", name, err)
		return c, nil, false
	}
	return c, log, true
}

func runHook(ctx context.Context, v *viper.Viper, _ []string) int {
	cfg, log, ok := decode(v, "oci-hook", func(c *hookConfig) common { return c.common })
	if !ok {
		return 2
	}
	on, err := hook.ParseOnUnavailable(cfg.OnUnavailable)
	if err != nil {
		log.Error("--"+keyOnUnavailable, "error", err)
		return 2
	}
	err = hook.RunOCI(ctx, hook.OCIConfig{
		Client:         hook.Client{Socket: cfg.Socket, Timeout: cfg.Timeout},
		OnUnavailable:  on,
		UnprotectedDir: cfg.UnprotectedDir,
		Logger:         log,
	}, os.Stdin)
	if err != nil {
		// The runtime shows this with its own error; keep it one plain line.
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runStandalone(ctx context.Context, v *viper.Viper, _ []string) int {
	cfg, log, ok := decode(v, "standalone", func(c *standaloneConfig) common { return c.common })
	if !ok {
		return 2
	}
	opts, err := cfg.options()
	if err != nil {
		log.Error("configuration", "error", err)
		return 2
	}
	events, code := openEvents(cfg.nodeConfig, log)
	if events == nil {
		return code
	}
	defer events.Close()
	err = standalone.Run(ctx, standalone.Config{
		PolicyFiles:    cfg.Policies,
		Compile:        opts,
		Socket:         cfg.Socket,
		HookTimeout:    cfg.Timeout,
		Containers:     cfg.Containers,
		UnprotectedDir: cfg.UnprotectedDir,
		PinDir:         cfg.PinDir,
		AppArmor:       cfg.appArmor(),
		SeccompRoot:    cfg.SeccompRoot,
		Events:         events,
		Logger:         log,
	})
	if err != nil {
		log.Error("podarmor-enforcer standalone stopped", "error", err)
		return 1
	}
	return 0
}

func runKubernetes(ctx context.Context, v *viper.Viper, _ []string) int {
	cfg, log, ok := decode(v, "kubernetes", func(c *kubernetesConfig) common { return c.common })
	if !ok {
		return 2
	}
	on, err := hook.ParseOnUnavailable(cfg.OnUnavailable)
	if err != nil {
		log.Error("--"+keyOnUnavailable, "error", err)
		return 2
	}
	events, code := openEvents(cfg.nodeConfig, log)
	if events == nil {
		return code
	}
	defer events.Close()
	rest, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		log.Error("API server configuration", "error", err)
		return 2
	}
	err = kube.Run(ctx, kube.Config{
		NodeName:          cfg.NodeName,
		REST:              rest,
		APIServer:         cfg.APIServer,
		ClusterCIDRs:      cfg.ClusterCIDRs,
		Socket:            cfg.Socket,
		HookTimeout:       cfg.Timeout,
		UnprotectedDir:    cfg.UnprotectedDir,
		PodWait:           cfg.PodWait,
		ReconcileInterval: cfg.ReconcileInterval,
		PinDir:            cfg.PinDir,
		BPFStats:          cfg.BPFStats,
		AppArmor:          cfg.appArmor(),
		SeccompRoot:       cfg.SeccompRoot,
		Proc:              cfg.Proc,
		NRI: nri.Config{
			Socket: cfg.NRISocket,
			Hook:   nri.HookConfig{Path: cfg.NRIHookPath, OnUnavailable: on},
		},
		ContainerdSocket: cfg.ContainerdSocket,
		Listen:           cfg.Listen,
		Events:           event.NewWriter(events),
		PodEventBurst:    cfg.PodEventBurst,
		PodEventInterval: cfg.PodEventInterval,
		Logger:           log,
	})
	if err != nil {
		log.Error("podarmor-enforcer kubernetes stopped", "error", err)
		return 1
	}
	return 0
}

func runInstallHook(_ context.Context, v *viper.Viper, _ []string) int {
	cfg, log, ok := decode(v, "install-hook", func(c *installHookConfig) common { return c.common })
	if !ok {
		return 2
	}
	if cfg.Dir == "" {
		log.Error("--" + keyDir + " is required")
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		log.Error("find this binary", "error", err)
		return 1
	}
	dest := filepath.Join(cfg.Dir, "podarmor-enforcer")
	changed, err := hook.Install(self, dest)
	if err != nil {
		log.Error("install the hook binary", "error", err)
		return 1
	}
	log.Info("hook binary", "path", dest, "changed", changed)
	return 0
}

// openEvents opens the event log: stdout, or a file (appended to, rotated by size).
// It logs what is wrong and returns the exit code: 2 for a bad setting, 1 for a file
// that cannot be opened.
func openEvents(c nodeConfig, log *slog.Logger) (io.WriteCloser, int) {
	lc, err := c.eventLog()
	if err != nil {
		log.Error("configuration", "error", err)
		return nil, 2
	}
	w, err := event.OpenLog(lc, os.Stdout)
	if err != nil {
		log.Error("event log", "error", err)
		return nil, 1
	}
	return w, 0
}

func runTry(ctx context.Context, v *viper.Viper, args []string) int {
	cfg, log, ok := decode(v, "try-guest", func(c *tryConfig) common { return c.common })
	if !ok {
		return trial.ExitNotStarted
	}
	rep := trial.NewReporter(os.Stdout, cfg.ReportPrefix)
	fail := func(err error) int {
		rep.Infof("%v", err)
		rep.Exit(trial.ExitNotStarted)
		return trial.ExitNotStarted
	}
	opts, err := cfg.options()
	if err != nil {
		return fail(err)
	}
	on, err := hook.ParseOnUnavailable(cfg.OnUnavailable)
	if err != nil {
		return fail(fmt.Errorf("--%s %w", keyOnUnavailable, err))
	}
	var mounts []trial.Mount
	for _, m := range cfg.Mounts {
		parts := strings.Split(m, ":")
		if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
			return fail(fmt.Errorf("--mount %q: want SRC:DST or SRC:DST:ro", m))
		}
		mounts = append(mounts, trial.Mount{Source: parts[0], Destination: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"})
	}
	slog.SetDefault(log)
	code, err := trial.Run(ctx, trial.Config{
		PolicyFile:      cfg.Policy,
		Compile:         opts,
		Unconfined:      cfg.Unconfined,
		Privileged:      cfg.Privileged,
		Mounts:          mounts,
		Setup:           cfg.Setup,
		Command:         args,
		WithoutEnforcer: cfg.WithoutEnforcer,
		OnUnavailable:   on,
		Dir:             cfg.Dir,
		Output:          os.Stdout,
		Report:          rep,
		Verbose:         cfg.Verbose,
	})
	if err != nil {
		return fail(err)
	}
	rep.Exit(code)
	return code
}
