package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// Manager provides the webhook's serving certificate and, in Secret mode, keeps the CA,
// the serving certificate and the webhook configurations' caBundle current.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	policy policy

	// cert is what GetCertificate hands out; swapped whole, never modified.
	cert atomic.Pointer[tls.Certificate]
	// bundle is the ca.crt last seen in the Secret.
	bundle atomic.Pointer[[]byte]

	// loadMu serialises loads; seenCert and seenKey are the PEM last tried, so an
	// unchanged or unchanged-and-broken pair is not parsed and logged again.
	loadMu   sync.Mutex
	seenCert []byte
	seenKey  []byte

	// kick wakes the leader's loop early, for example when the Secret or a webhook
	// configuration changed under it.
	kick    chan struct{}
	started atomic.Bool
}

// New returns a Manager for cfg. It does no I/O; Run starts the work.
func New(cfg Config) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, fmt.Errorf("webhook certificates config: %w", err)
	}
	log := cfg.Logger.With("component", "webhook-certs")
	if cfg.fileMode() {
		log = log.With("cert_file", cfg.CertFile, "key_file", cfg.KeyFile)
	} else {
		log = log.With("secret", cfg.Namespace+"/"+cfg.SecretName)
	}
	return &Manager{
		cfg: cfg,
		log: log,
		policy: policy{
			caName:          cfg.ServiceName,
			id:              cfg.identity(),
			caValidity:      cfg.CAValidity,
			servingValidity: cfg.ServingValidity,
			overlap:         cfg.Overlap,
		},
		kick: make(chan struct{}, 1),
	}, nil
}

// GetCertificate returns the current serving certificate; use it as
// tls.Config.GetCertificate. Each TLS handshake asks again, so a rotated certificate is
// used by new connections at once while established connections keep theirs.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := m.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate loaded yet")
}

// Ready reports whether a serving certificate is loaded, for the readiness probe.
func (m *Manager) Ready() bool {
	return m.cert.Load() != nil
}

// CABundle returns the PEM trust bundle last read from the Secret (the bundle the
// leader publishes as caBundle), or nil before then and in file mode.
func (m *Manager) CABundle() []byte {
	if b := m.bundle.Load(); b != nil {
		return bytes.Clone(*b)
	}
	return nil
}

// TLSConfig returns a server tls.Config that serves the Manager's certificate.
func (m *Manager) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: m.GetCertificate}
}

// Run works until ctx ends, then returns nil; it may be called once. In Secret mode it
// watches the Secret and serves what it holds, and takes part in leader election: the
// leader creates and rotates the certificates and publishes the CA bundle. In file mode
// it rereads the files every FilePollInterval. The leader also runs WhileLeading, in
// file mode too.
func (m *Manager) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("webhook certificates manager already running")
	}
	if m.cfg.fileMode() && m.cfg.WhileLeading == nil {
		m.pollFiles(ctx)
		return nil
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.cfg.fileMode() {
		wg.Go(func() { m.pollFiles(ctx) })
		return m.elect(ctx)
	}
	secrets := m.watchSecret()
	wg.Go(func() { secrets.RunWithContext(ctx) })
	// Load what exists before competing for the bookkeeping: a replica that cannot
	// read the Secret cannot serve, and should not manage it either.
	if !cache.WaitForCacheSync(ctx.Done(), secrets.HasSynced) {
		return nil
	}
	return m.elect(ctx)
}

// watchSecret returns an informer on the one Secret. A watch rather than polling: a
// rotation reaches every replica within moments at the cost of one idle connection, and
// the field selector keeps both the traffic and the RBAC grant (list and watch with
// resourceNames) to that Secret.
func (m *Manager) watchSecret() cache.SharedIndexInformer {
	inf := coreinformers.NewFilteredSecretInformer(m.cfg.Client, m.cfg.Namespace, 0, nil,
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", m.cfg.SecretName).String()
		})
	onSecret := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Name != m.cfg.SecretName {
			return
		}
		m.loadSecret(s)
		m.wakeLeader()
	}
	// Only the handler's registration can fail, and only once the informer has stopped.
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onSecret,
		UpdateFunc: func(_, obj any) { onSecret(obj) },
		DeleteFunc: func(any) {
			// Keep serving the last certificate: it stays valid, and the leader writes
			// a Secret again that keeps its CA if it can.
			m.log.Warn("certificate Secret deleted; serving the last certificate until it is recreated")
			m.wakeLeader()
		},
	})
	return inf
}

// loadSecret serves the certificate in s.
func (m *Manager) loadSecret(s *corev1.Secret) {
	if b, ok := s.Data[CABundleKey]; ok {
		b = bytes.Clone(b)
		m.bundle.Store(&b)
	}
	if err := m.load(s.Data[TLSCertKey], s.Data[TLSKeyKey]); err != nil {
		m.log.Error("serving certificate in Secret not loaded; keeping the previous one", "err", err)
	}
}

// load makes the PEM pair the served certificate unless it is the pair last tried.
func (m *Manager) load(certPEM, keyPEM []byte) error {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	if bytes.Equal(certPEM, m.seenCert) && bytes.Equal(keyPEM, m.seenKey) {
		return nil
	}
	m.seenCert, m.seenKey = bytes.Clone(certPEM), bytes.Clone(keyPEM)
	pair, err := keyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("parse serving certificate and key: %w", err)
	}
	m.cert.Store(&pair)
	m.log.Info("serving certificate loaded",
		"serial", fmt.Sprintf("%x", pair.Leaf.SerialNumber),
		"issuer", pair.Leaf.Issuer.CommonName,
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// pollFiles reloads CertFile and KeyFile until ctx ends. It compares contents, not
// modification times: the files are small, and kubelet replaces a mounted Secret by
// swapping a symlink, which a content check sees regardless of timestamps and their
// granularity. A half-updated pair fails to parse and is tried again on the next tick.
func (m *Manager) pollFiles(ctx context.Context) {
	t := time.NewTicker(m.cfg.FilePollInterval)
	defer t.Stop()
	var lastErr string // log a lasting problem once, not every tick
	for {
		if err := m.loadFiles(); err != nil && err.Error() != lastErr {
			m.log.Error("serving certificate files not loaded; keeping the previous certificate", "err", err)
			lastErr = err.Error()
		} else if err == nil {
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// loadFiles reads and loads CertFile and KeyFile.
func (m *Manager) loadFiles() error {
	certPEM, err := os.ReadFile(m.cfg.CertFile)
	if err != nil {
		return fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(m.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("read key: %w", err)
	}
	return m.load(certPEM, keyPEM)
}

// wakeLeader asks the leader loop, if this replica runs it, to check now.
func (m *Manager) wakeLeader() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}
