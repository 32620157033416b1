// Command podarmor-webhook is podarmor's admission webhook: it validates policies and
// confines the pods of opted-in namespaces at creation. Configuration comes from flags,
// PODARMOR_* environment variables (PODARMOR_DEFAULT_POLICY for --default-policy) and an
// optional file (--config); see docs/webhook.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"golang.org/x/sync/errgroup"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podarmor/podarmor/policies/cluster"
	"github.com/podarmor/podarmor/webhook/admission"
	"github.com/podarmor/podarmor/webhook/certs"
	"github.com/podarmor/podarmor/webhook/metrics"
	"github.com/podarmor/podarmor/webhook/policy"
	"github.com/podarmor/podarmor/webhook/policystatus"
	"github.com/podarmor/podarmor/webhook/registration"
	"github.com/podarmor/podarmor/webhook/server"
)

// Configuration keys: flag names, and with PODARMOR_ and dashes as underscores, the
// environment variables.
const (
	keyConfig          = "config"
	keyKubeconfig      = "kubeconfig"
	keyListen          = "listen-address"
	keyMetricsListen   = "metrics-address"
	keyNamespace       = "namespace"
	keyDefaultPolicy   = "default-policy"
	keyServiceName     = "service-name"
	keySecretName      = "tls-secret-name"
	keyCertFile        = "tls-cert-file"
	keyKeyFile         = "tls-key-file"
	keyDNSNames        = "tls-dns-names"
	keyIPAddresses     = "tls-ip-addresses"
	keyServingValidity = "tls-serving-validity"
	keyCAValidity      = "tls-ca-validity"
	keyOverlap         = "tls-overlap"
	keyConfigName      = "webhook-configuration-name"
	keyRegisterURL     = "register-url"
	keyAPIServer       = "apiserver-addresses"
	keyClusterCIDRs    = "cluster-cidrs"
	keyVersionRefresh  = "version-refresh"
	keyResync          = "resync"
	keyLogFormat       = "log-format"
	keyLogLevel        = "log-level"
	keyGCPercent       = "gc-percent"
	keyPolicyStatus    = "aggregate-policy-status"
	keyStatusBatch     = "policy-status-batch-delay"
)

// statusQPS and statusBurst limit the policy status aggregator's own client: it writes
// at most about one status per policy per batch delay, and should neither wait behind
// nor crowd out the webhook's other requests.
const (
	statusQPS   = 20
	statusBurst = 40
)

// config is the typed configuration, read once.
type config struct {
	Kubeconfig      string        `mapstructure:"kubeconfig"`
	Listen          string        `mapstructure:"listen-address"`
	MetricsListen   string        `mapstructure:"metrics-address"`
	Namespace       string        `mapstructure:"namespace"`
	DefaultPolicy   string        `mapstructure:"default-policy"`
	ServiceName     string        `mapstructure:"service-name"`
	SecretName      string        `mapstructure:"tls-secret-name"`
	CertFile        string        `mapstructure:"tls-cert-file"`
	KeyFile         string        `mapstructure:"tls-key-file"`
	DNSNames        []string      `mapstructure:"tls-dns-names"`
	IPAddresses     []string      `mapstructure:"tls-ip-addresses"`
	ServingValidity time.Duration `mapstructure:"tls-serving-validity"`
	CAValidity      time.Duration `mapstructure:"tls-ca-validity"`
	Overlap         time.Duration `mapstructure:"tls-overlap"`
	ConfigName      string        `mapstructure:"webhook-configuration-name"`
	RegisterURL     string        `mapstructure:"register-url"`
	APIServer       []string      `mapstructure:"apiserver-addresses"`
	ClusterCIDRs    []string      `mapstructure:"cluster-cidrs"`
	VersionRefresh  time.Duration `mapstructure:"version-refresh"`
	Resync          time.Duration `mapstructure:"resync"`
	LogFormat       string        `mapstructure:"log-format"`
	LogLevel        string        `mapstructure:"log-level"`
	GCPercent       int           `mapstructure:"gc-percent"`
	PolicyStatus    bool          `mapstructure:"aggregate-policy-status"`
	StatusBatch     time.Duration `mapstructure:"policy-status-batch-delay"`
}

func loadConfig(args []string) (config, error) {
	fs := pflag.NewFlagSet("podarmor-webhook", pflag.ContinueOnError)
	fs.String(keyConfig, "", "configuration file (YAML); flags and PODARMOR_* variables override it")
	fs.String(keyKubeconfig, "", "kubeconfig; empty means in-cluster")
	fs.String(keyListen, ":9443", "address of the webhook's HTTPS server")
	fs.String(keyMetricsListen, ":8080", "address of /metrics, /healthz and /readyz (plain HTTP)")
	fs.String(keyNamespace, "podarmor-system", "namespace podarmor runs in (never confined)")
	fs.String(keyDefaultPolicy, "default", "ClusterArmorPolicy for pods of opted-in namespaces that no other policy selects; empty refuses such pods")
	fs.String(keyServiceName, certs.DefaultServiceName, "Service of the webhook, for the serving certificate's names")
	fs.String(keySecretName, certs.DefaultSecretName, "Secret holding the webhook's CA and serving certificate")
	fs.String(keyCertFile, "", "serving certificate file (cert-manager); disables the self-managed CA")
	fs.String(keyKeyFile, "", "serving key file, with --tls-cert-file")
	fs.StringSlice(keyDNSNames, nil, "extra DNS names for the serving certificate")
	fs.StringSlice(keyIPAddresses, nil, "IP addresses for the serving certificate (e.g. 127.0.0.1 outside a cluster)")
	fs.Duration(keyServingValidity, certs.DefaultServingValidity, "validity of serving certificates")
	fs.Duration(keyCAValidity, certs.DefaultCAValidity, "validity of the CA")
	fs.Duration(keyOverlap, certs.DefaultOverlap, "how long a new CA is trusted before it signs the serving certificate, and the old one after; under a third of both validities")
	fs.String(keyConfigName, "podarmor", "name of the Mutating- and ValidatingWebhookConfiguration")
	fs.String(keyRegisterURL, "", "create or update the webhook configurations with this base URL (a webhook outside the cluster, e.g. https://127.0.0.1:9443); empty leaves them to the Helm chart")
	fs.StringSlice(keyAPIServer, nil, "addresses $APISERVER stands for in policies; empty reads the kubernetes Service")
	fs.StringSlice(keyClusterCIDRs, nil, "pod and service CIDRs $CLUSTER_CIDRS stands for in policies")
	fs.Duration(keyVersionRefresh, 10*time.Minute, "how often to re-read the API server's version (AppArmor field or annotation)")
	fs.Duration(keyResync, 10*time.Minute, "informer resync period")
	fs.String(keyLogFormat, "json", "log format: json or text")
	fs.String(keyLogLevel, "info", "log level: debug, info, warn or error")
	fs.Int(keyGCPercent, server.GCPercent, "garbage collection target percentage, as GOGC (which wins when set); fewer collections, fewer slow reviews, more memory")
	fs.Bool(keyPolicyStatus, true, "while leader, aggregate the enforcers' ArmorNodeStatus reports into each policy's status (off only where something else writes it)")
	fs.Duration(keyStatusBatch, policystatus.DefaultBatchDelay, "how long a node report's change waits for others before the policies it concerns are recomputed")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	v := viper.New()
	v.SetEnvPrefix("PODARMOR")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if err := v.BindPFlags(fs); err != nil {
		return config{}, err
	}
	if file := v.GetString(keyConfig); file != "" {
		v.SetConfigFile(file)
		if err := v.ReadInConfig(); err != nil {
			return config{}, fmt.Errorf("read config %s: %w", file, err)
		}
	}
	var c config
	if err := v.Unmarshal(&c); err != nil {
		return config{}, fmt.Errorf("configuration: %w", err)
	}
	return c, nil
}

func newLogger(format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--%s %q: %w", keyLogLevel, level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--%s %q: want json or text", keyLogFormat, format)
}

func main() {
	cfg, err := loadConfig(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podarmor-webhook:", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podarmor-webhook:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("podarmor-webhook stopped", "error", err)
		os.Exit(1)
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(cfg.GCPercent)
	}
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client config: %w", err)
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}

	compileOpts, err := cluster.CompileOptions(ctx, kube, cfg.APIServer, cfg.ClusterCIDRs)
	if err != nil {
		return err
	}
	store, err := policy.NewInformers(kube, dyn, cfg.Resync)
	if err != nil {
		return err
	}
	version := &serverVersion{kube: kube, log: log}
	if err := version.refresh(); err != nil {
		return err
	}

	var ips []net.IP
	for _, s := range cfg.IPAddresses {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("--%s: %q is not an IP address", keyIPAddresses, s)
		}
		ips = append(ips, ip)
	}
	if cfg.RegisterURL != "" {
		if err := register(ctx, kube, cfg); err != nil {
			return err
		}
	}
	whileLeading, err := statusAggregator(rc, cfg, log)
	if err != nil {
		return err
	}
	tlsCerts, err := certs.New(certs.Config{
		Client: kube, Namespace: cfg.Namespace, SecretName: cfg.SecretName, ServiceName: cfg.ServiceName,
		DNSNames: cfg.DNSNames, IPAddresses: ips,
		MutatingWebhookConfigurationName: cfg.ConfigName, ValidatingWebhookConfigurationName: cfg.ConfigName,
		CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		ServingValidity: cfg.ServingValidity, CAValidity: cfg.CAValidity, Overlap: cfg.Overlap,
		WhileLeading: whileLeading,
		Logger:       log,
	})
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rec, err := metrics.New(reg, store.Size)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	conflicts := policy.NewConflictRecorder(dyn, log)
	ready := func() bool { return store.Synced() && tlsCerts.Ready() }
	handler, err := server.New(server.Config{
		Planner: &admission.Planner{Store: store, DefaultPolicy: cfg.DefaultPolicy},
		Namespace: func(ctx context.Context, name string) (*corev1.Namespace, error) {
			if ns, ok := store.Namespace(name); ok {
				return ns, nil
			}
			return kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		},
		AppArmorField: version.appArmorField,
		Compile:       compileOpts,
		Ready:         ready,
		Metrics:       rec,
		Conflicts:     conflicts,
		Logger:        log,
	})
	if err != nil {
		return err
	}

	ops := http.NewServeMux()
	ops.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ops.Handle("/healthz", handler)
	ops.Handle("/readyz", handler)
	// HTTP/1.1 only: the API server keeps a pool of connections to the webhook either
	// way, and HTTP/1.1 answers a review in one goroutine where HTTP/2 hands every
	// request and frame between three, which costs the API server 0.3-0.5 ms per pod
	// on a busy 2-core node (docs/benchmarks.md). It also keeps HTTP/2's
	// rapid-reset class of attacks away, as kubebuilder's webhooks do by default.
	webhookSrv := &http.Server{
		Addr: cfg.Listen, Handler: handler, TLSConfig: tlsCerts.TLSConfig(), ReadHeaderTimeout: 5 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	opsSrv := &http.Server{Addr: cfg.MetricsListen, Handler: ops, ReadHeaderTimeout: 5 * time.Second}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return tlsCerts.Run(ctx) })
	g.Go(func() error { return store.Start(ctx) })
	g.Go(func() error { conflicts.Run(ctx); return nil })
	g.Go(func() error { version.run(ctx, cfg.VersionRefresh); return nil })
	g.Go(func() error { return serve(ctx, webhookSrv, true) })
	g.Go(func() error { return serve(ctx, opsSrv, false) })
	log.Info("podarmor-webhook started", "listen", cfg.Listen, "metrics", cfg.MetricsListen, "namespace", cfg.Namespace,
		"defaultPolicy", cfg.DefaultPolicy, "appArmorField", version.appArmorField())
	return g.Wait()
}

// statusAggregator returns what the leader runs to keep policy status current, or nil
// when --aggregate-policy-status is off. It shares the certificate bookkeeping's Lease,
// so one replica does both.
func statusAggregator(rc *rest.Config, cfg config, log *slog.Logger) (func(context.Context), error) {
	if !cfg.PolicyStatus {
		return nil, nil
	}
	src := rest.CopyConfig(rc)
	src.QPS, src.Burst = statusQPS, statusBurst
	dyn, err := dynamic.NewForConfig(src)
	if err != nil {
		return nil, fmt.Errorf("policy status client: %w", err)
	}
	agg, err := policystatus.New(policystatus.Config{Client: dyn, BatchDelay: cfg.StatusBatch, Resync: cfg.Resync, Logger: log})
	if err != nil {
		return nil, err
	}
	return func(term context.Context) {
		if err := agg.Run(term); err != nil {
			log.Error("policy status aggregator stopped for this term", "error", err)
		}
	}, nil
}

// serve runs srv until ctx ends, then drains it.
func serve(ctx context.Context, srv *http.Server, tls bool) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if tls {
			err = srv.ListenAndServeTLS("", "")
		} else {
			err = srv.ListenAndServe()
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", srv.Addr, err)
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	}
}

// register creates or updates the webhook configurations for a webhook reached by URL.
// The certificate manager fills in their CA bundle; an update keeps the bundle it wrote.
func register(ctx context.Context, kube kubernetes.Interface, cfg config) error {
	m, v, err := registration.Configurations(registration.Options{
		Name: cfg.ConfigName, URL: cfg.RegisterURL, OwnNamespace: cfg.Namespace,
	})
	if err != nil {
		return err
	}
	mc := kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if old, err := mc.Get(ctx, m.Name, metav1.GetOptions{}); err == nil {
		for i := range m.Webhooks {
			m.Webhooks[i].ClientConfig.CABundle = caBundle(old.Webhooks, m.Webhooks[i].Name)
		}
		m.ResourceVersion = old.ResourceVersion
		if _, err := mc.Update(ctx, m, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update MutatingWebhookConfiguration %s: %w", m.Name, err)
		}
	} else if _, err := mc.Create(ctx, m, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create MutatingWebhookConfiguration %s: %w", m.Name, err)
	}
	vc := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if old, err := vc.Get(ctx, v.Name, metav1.GetOptions{}); err == nil {
		for i := range v.Webhooks {
			v.Webhooks[i].ClientConfig.CABundle = caBundle(old.Webhooks, v.Webhooks[i].Name)
		}
		v.ResourceVersion = old.ResourceVersion
		if _, err := vc.Update(ctx, v, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update ValidatingWebhookConfiguration %s: %w", v.Name, err)
		}
	} else if _, err := vc.Create(ctx, v, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ValidatingWebhookConfiguration %s: %w", v.Name, err)
	}
	return nil
}

// caBundle is the CA bundle of the webhook called name in an existing configuration.
func caBundle[W admissionregistrationv1.MutatingWebhook | admissionregistrationv1.ValidatingWebhook](webhooks []W, name string) []byte {
	for _, w := range webhooks {
		switch w := any(w).(type) {
		case admissionregistrationv1.MutatingWebhook:
			if w.Name == name {
				return w.ClientConfig.CABundle
			}
		case admissionregistrationv1.ValidatingWebhook:
			if w.Name == name {
				return w.ClientConfig.CABundle
			}
		}
	}
	return nil
}
