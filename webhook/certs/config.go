package certs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// Names the deploy manifests use; Config falls back to them.
const (
	// DefaultSecretName is the Secret that holds the CA and the serving certificate.
	DefaultSecretName = "podarmor-webhook-tls"
	// DefaultServiceName is the webhook's Service; its DNS names go into the certificate.
	DefaultServiceName = "podarmor-webhook"
	// DefaultWebhookConfigurationName names both the mutating and the validating
	// webhook configuration whose caBundle the leader keeps current.
	DefaultWebhookConfigurationName = "podarmor-webhook"
	// DefaultLeaseName is the Lease that elects the replica doing the bookkeeping.
	DefaultLeaseName = "podarmor-webhook-certs"
)

// Keys of the Secret. tls.crt and tls.key are what a kubernetes.io/tls Secret requires;
// ca.crt is the trust bundle (one CA, or two during a CA rotation) and ca.key the key of
// the CA that signs new serving certificates.
const (
	// CABundleKey holds the PEM trust bundle, published as caBundle.
	CABundleKey = "ca.crt"
	// CAKeyKey holds the PEM key of the signing CA.
	CAKeyKey = "ca.key"
	// TLSCertKey holds the PEM serving certificate.
	TLSCertKey = corev1.TLSCertKey
	// TLSKeyKey holds the PEM key of the serving certificate.
	TLSKeyKey = corev1.TLSPrivateKeyKey
)

// Defaults for durations left zero in Config.
const (
	// DefaultCAValidity is the lifetime of a CA: 10 years, renewed after about 6⅔.
	DefaultCAValidity = 10 * 365 * 24 * time.Hour
	// DefaultServingValidity is the lifetime of a serving certificate: 1 year, renewed
	// after 8 months.
	DefaultServingValidity = 365 * 24 * time.Hour
	// DefaultOverlap is how long both CAs are trusted before and after the switch. A
	// day covers API servers (seconds) and kubelet's refresh of mounted Secrets (about
	// a minute) with a wide margin.
	DefaultOverlap = 24 * time.Hour
	// DefaultResyncInterval bounds the leader's sleep between checks.
	DefaultResyncInterval = time.Minute
	// DefaultLeaseDuration, DefaultRenewDeadline and DefaultRetryPeriod are client-go's
	// customary leader election timings.
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	// DefaultFilePollInterval is how often file mode rereads the files.
	DefaultFilePollInterval = 5 * time.Second
)

// Config configures a Manager. It has two modes. With CertFile and KeyFile empty (the
// default) the webhook manages its own CA and serving certificate in a Secret; with both
// set it serves whatever those files hold (cert-manager's mode) and touches no API object.
type Config struct {
	// Client talks to the API server. Required in Secret mode.
	Client kubernetes.Interface
	// Namespace holds the Secret, the Lease and the webhook's Service. Required in
	// Secret mode; in a pod, pass the namespace from the downward API.
	Namespace string
	// SecretName is the Secret with the keys ca.crt, ca.key, tls.crt and tls.key.
	// Default DefaultSecretName.
	SecretName string
	// ServiceName is the webhook's Service. The serving certificate names <svc>,
	// <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local. Default
	// DefaultServiceName.
	ServiceName string
	// DNSNames are extra DNS names for the serving certificate.
	DNSNames []string
	// IPAddresses are extra IP addresses for the serving certificate, such as 127.0.0.1
	// for a webhook that the API server reaches by URL on the local host.
	IPAddresses []net.IP
	// MutatingWebhookConfigurationName and ValidatingWebhookConfigurationName name the
	// configurations whose webhooks get the CA bundle as caBundle. No other configuration
	// is touched. Default DefaultWebhookConfigurationName.
	MutatingWebhookConfigurationName   string
	ValidatingWebhookConfigurationName string
	// LeaseName is the Lease in Namespace for leader election. Default DefaultLeaseName.
	LeaseName string
	// Identity is this replica's name in the Lease; it must differ between replicas.
	// Default the host name, which in a pod is the pod name.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune client-go's leader election.
	// Defaults DefaultLeaseDuration, DefaultRenewDeadline and DefaultRetryPeriod.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// CAValidity is the lifetime of a new CA. A CA is replaced when less than a third of
	// it remains. Default DefaultCAValidity.
	CAValidity time.Duration
	// ServingValidity is the lifetime of a new serving certificate (capped by its CA's).
	// It is replaced when less than a third remains. Default DefaultServingValidity.
	ServingValidity time.Duration
	// Overlap is how long a new CA sits in the published bundle next to the old one
	// before serving certificates signed by it are used, and again how long the old CA
	// stays after that. It must cover the time the API servers and other clients take
	// to see a new bundle, and be less than a third of both validities. Default
	// DefaultOverlap.
	Overlap time.Duration
	// ResyncInterval is the longest the leader waits between checks of the Secret and
	// the webhook configurations; watches and due dates wake it earlier. Default
	// DefaultResyncInterval.
	ResyncInterval time.Duration

	// CertFile and KeyFile select file mode: PEM files, typically a cert-manager Secret
	// mounted as a volume. Set both or neither.
	CertFile string
	KeyFile  string
	// FilePollInterval is how often file mode rereads the files. Default
	// DefaultFilePollInterval.
	FilePollInterval time.Duration

	// WhileLeading, when set, runs for each term in which this replica holds the Lease,
	// next to the certificate bookkeeping, and must return when the term's context ends.
	// Other leader-only work (the policy status aggregator) shares the election this way.
	// In file mode the replica then takes part in the election for WhileLeading alone,
	// and needs Client and Namespace as in Secret mode.
	WhileLeading func(term context.Context)

	// Now is the clock for certificate dates. Default time.Now.
	Now func() time.Time
	// Logger receives the Manager's logs. Default slog.Default().
	Logger *slog.Logger
}

// fileMode reports whether certificates come from files rather than a Secret.
func (c *Config) fileMode() bool {
	return c.CertFile != "" || c.KeyFile != ""
}

// defaults fills the optional fields and rejects missing or inconsistent ones.
func (c *Config) defaults() error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.fileMode() {
		if c.CertFile == "" || c.KeyFile == "" {
			return errors.New("file mode needs both CertFile and KeyFile")
		}
		if c.FilePollInterval == 0 {
			c.FilePollInterval = DefaultFilePollInterval
		}
		if c.FilePollInterval < 0 {
			return fmt.Errorf("negative FilePollInterval %s", c.FilePollInterval)
		}
		if c.WhileLeading == nil {
			return nil
		}
	}

	if c.Client == nil {
		return errors.New("no Client: one is required unless CertFile and KeyFile are set and WhileLeading is not")
	}
	if c.Namespace == "" {
		return errors.New("no Namespace: one is required unless CertFile and KeyFile are set and WhileLeading is not")
	}
	setDefault(&c.SecretName, DefaultSecretName)
	setDefault(&c.ServiceName, DefaultServiceName)
	setDefault(&c.MutatingWebhookConfigurationName, DefaultWebhookConfigurationName)
	setDefault(&c.ValidatingWebhookConfigurationName, DefaultWebhookConfigurationName)
	setDefault(&c.LeaseName, DefaultLeaseName)
	if c.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("default Identity to the host name: %w", err)
		}
		c.Identity = host
	}
	setDefault(&c.LeaseDuration, DefaultLeaseDuration)
	setDefault(&c.RenewDeadline, DefaultRenewDeadline)
	setDefault(&c.RetryPeriod, DefaultRetryPeriod)
	setDefault(&c.CAValidity, DefaultCAValidity)
	setDefault(&c.ServingValidity, DefaultServingValidity)
	setDefault(&c.Overlap, DefaultOverlap)
	setDefault(&c.ResyncInterval, DefaultResyncInterval)

	for name, d := range map[string]time.Duration{
		"LeaseDuration": c.LeaseDuration, "RenewDeadline": c.RenewDeadline,
		"RetryPeriod": c.RetryPeriod, "CAValidity": c.CAValidity,
		"ServingValidity": c.ServingValidity, "Overlap": c.Overlap,
		"ResyncInterval": c.ResyncInterval,
	} {
		if d < 0 {
			return fmt.Errorf("negative %s %s", name, d)
		}
	}
	// client-go's leader election rejects these too, but only once Run starts.
	if c.LeaseDuration <= c.RenewDeadline {
		return fmt.Errorf("lease duration %s must exceed renew deadline %s", c.LeaseDuration, c.RenewDeadline)
	}
	if float64(c.RenewDeadline) <= 1.2*float64(c.RetryPeriod) {
		return fmt.Errorf("renew deadline %s must exceed 1.2 × retry period %s", c.RenewDeadline, c.RetryPeriod)
	}
	// A rotation takes two overlaps and starts when a third of the lifetime is left;
	// a longer overlap would let the outgoing certificate expire mid-rotation.
	if c.Overlap >= c.ServingValidity/3 || c.Overlap >= c.CAValidity/3 {
		return fmt.Errorf("overlap %s must be less than a third of the serving validity %s and of the CA validity %s",
			c.Overlap, c.ServingValidity, c.CAValidity)
	}
	c.DNSNames = slices.Clone(c.DNSNames)
	c.IPAddresses = slices.Clone(c.IPAddresses)
	for _, ip := range c.IPAddresses {
		if ip.To16() == nil {
			return fmt.Errorf("invalid IP address %v in IPAddresses", []byte(ip))
		}
	}
	return nil
}

// identity is what the serving certificate must name.
func (c *Config) identity() identity {
	svc, ns := c.ServiceName, c.Namespace
	names := append([]string{
		svc,
		svc + "." + ns,
		svc + "." + ns + ".svc",
		svc + "." + ns + ".svc.cluster.local",
	}, c.DNSNames...)
	return identity{
		commonName: svc + "." + ns + ".svc",
		dnsNames:   normaliseDNS(names),
		ips:        normaliseIPs(c.IPAddresses),
	}
}

// setDefault sets *v to def when it is the zero value.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
