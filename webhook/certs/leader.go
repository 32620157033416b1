package certs

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	admissioninformers "k8s.io/client-go/informers/admissionregistration/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"
)

// errorRetry is how soon the leader tries again after a failed check.
const errorRetry = 5 * time.Second

// elect takes part in leader election until ctx ends. The bookkeeping runs in one
// goroutine owned here, handed each term's context, so that two terms never overlap in
// this process and nothing outlives Run.
func (m *Manager) elect(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	terms := make(chan context.Context)
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case term := <-terms:
				m.lead(term)
			}
		}
	})

	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: m.cfg.Namespace, Name: m.cfg.LeaseName},
				Client:     m.cfg.Client.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: m.cfg.Identity},
			},
			LeaseDuration: m.cfg.LeaseDuration,
			RenewDeadline: m.cfg.RenewDeadline,
			RetryPeriod:   m.cfg.RetryPeriod,
			// Hand over at once on shutdown instead of leaving the others to wait out
			// the lease.
			ReleaseOnCancel: true,
			Name:            m.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(term context.Context) {
					select {
					case terms <- term:
					case <-term.Done():
					}
				},
				OnStoppedLeading: func() {},
				OnNewLeader: func(id string) {
					m.log.Info("certificate bookkeeping leader elected", "leader", id, "self", id == m.cfg.Identity)
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		// Run returns when ctx ends or the lease is lost; then compete again.
		le.Run(ctx)
	}
	return nil
}

// lead does the bookkeeping until term ends: it reconciles at once, then whenever
// something falls due, the Secret or a webhook configuration changes, or
// ResyncInterval passes. WhileLeading runs next to it for the same term.
func (m *Manager) lead(term context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if f := m.cfg.WhileLeading; f != nil {
		wg.Go(func() { f(term) })
	}
	if m.cfg.fileMode() {
		m.log.Info("leading; no certificate bookkeeping in file mode", "identity", m.cfg.Identity)
		<-term.Done()
		return
	}
	m.log.Info("leading certificate bookkeeping", "identity", m.cfg.Identity)
	for _, inf := range m.watchConfigurations() {
		wg.Go(func() { inf.RunWithContext(term) })
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-term.Done():
			m.log.Info("stopped leading certificate bookkeeping")
			return
		case <-timer.C:
		case <-m.kick:
		}
		wait := m.cfg.ResyncInterval
		wake, err := m.reconcile(term)
		if err != nil {
			if term.Err() != nil {
				continue
			}
			m.log.Error("certificate bookkeeping incomplete; retrying", "err", err, "retry_in", min(wait, errorRetry))
			wait = min(wait, errorRetry)
		}
		if !wake.IsZero() {
			wait = min(wait, max(wake.Sub(m.cfg.Now()), 0))
		}
		timer.Reset(wait)
	}
}

// watchConfigurations returns informers on the two webhook configurations that wake
// the leader: a configuration created or reapplied without caBundle gets it within
// moments instead of at the next resync.
func (m *Manager) watchConfigurations() []cache.SharedIndexInformer {
	byName := func(name string) func(*metav1.ListOptions) {
		return func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}
	}
	infs := []cache.SharedIndexInformer{
		admissioninformers.NewFilteredMutatingWebhookConfigurationInformer(m.cfg.Client, 0, nil,
			byName(m.cfg.MutatingWebhookConfigurationName)),
		admissioninformers.NewFilteredValidatingWebhookConfigurationInformer(m.cfg.Client, 0, nil,
			byName(m.cfg.ValidatingWebhookConfigurationName)),
	}
	for _, inf := range infs {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { m.wakeLeader() },
			UpdateFunc: func(_, _ any) { m.wakeLeader() },
		})
	}
	return infs
}

// reconcile brings the Secret and the caBundles up to date once and returns when it
// next has something to do. Writes are optimistic: a replica that lost a race to create
// or update the Secret reads the winner's and plans again, so racing replicas converge.
func (m *Manager) reconcile(ctx context.Context) (time.Time, error) {
	secrets := m.cfg.Client.CoreV1().Secrets(m.cfg.Namespace)
	var (
		wake       time.Time
		bundle     []byte
		trustedErr error
	)
	raced := func(err error) bool { return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) }
	err := retry.OnError(retry.DefaultRetry, raced, func() error {
		secret, err := secrets.Get(ctx, m.cfg.SecretName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			secret = nil
		case err != nil:
			return fmt.Errorf("get Secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
		}
		var cur material
		if secret != nil {
			cur = parseMaterial(secret.Data)
		}
		// Not knowing whether the new CA is trusted only delays the switch to it;
		// it must not stop the Secret from being created or renewed.
		var trusted bool
		trusted, trustedErr = m.trusted(ctx, cur.signer)
		d, err := m.policy.plan(cur, m.cfg.Now(), trusted)
		if err != nil {
			return fmt.Errorf("plan certificates: %w", err)
		}
		wake, bundle = d.wake, d.next.bundle()
		if !d.write {
			return nil
		}
		if secret == nil {
			_, err = secrets.Create(ctx, &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: m.cfg.Namespace,
					Name:      m.cfg.SecretName,
					Labels:    map[string]string{"app.kubernetes.io/managed-by": "podarmor-webhook"},
				},
				Type: corev1.SecretTypeTLS,
				Data: d.next.data(),
			}, metav1.CreateOptions{})
		} else {
			secret = secret.DeepCopy()
			secret.Data = d.next.data()
			_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("write Secret %s/%s: %w", m.cfg.Namespace, m.cfg.SecretName, err)
		}
		for _, c := range d.changes {
			m.log.Info("certificate Secret updated", "change", c)
		}
		return nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return wake, errors.Join(trustedErr, m.publish(ctx, bundle))
}

// webhookCA is one webhook's name and caBundle.
type webhookCA struct {
	name     string
	caBundle []byte
}

// webhookConfiguration is a mutating or validating webhook configuration, reduced to
// what the leader reads and writes.
type webhookConfiguration struct {
	kind, name string
	get        func(context.Context) ([]webhookCA, error)
	patch      func(context.Context, []byte) error
}

// configurations returns the two configurations the leader keeps.
func (m *Manager) configurations() []webhookConfiguration {
	mut := m.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	val := m.cfg.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	mutName, valName := m.cfg.MutatingWebhookConfigurationName, m.cfg.ValidatingWebhookConfigurationName
	return []webhookConfiguration{
		{
			kind: "MutatingWebhookConfiguration", name: mutName,
			get: func(ctx context.Context) ([]webhookCA, error) {
				c, err := mut.Get(ctx, mutName, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				return collect(c.Webhooks, func(w admissionregistrationv1.MutatingWebhook) webhookCA {
					return webhookCA{w.Name, w.ClientConfig.CABundle}
				}), nil
			},
			patch: func(ctx context.Context, p []byte) error {
				_, err := mut.Patch(ctx, mutName, types.JSONPatchType, p, metav1.PatchOptions{})
				return err
			},
		},
		{
			kind: "ValidatingWebhookConfiguration", name: valName,
			get: func(ctx context.Context) ([]webhookCA, error) {
				c, err := val.Get(ctx, valName, metav1.GetOptions{})
				if err != nil {
					return nil, err
				}
				return collect(c.Webhooks, func(w admissionregistrationv1.ValidatingWebhook) webhookCA {
					return webhookCA{w.Name, w.ClientConfig.CABundle}
				}), nil
			},
			patch: func(ctx context.Context, p []byte) error {
				_, err := val.Patch(ctx, valName, types.JSONPatchType, p, metav1.PatchOptions{})
				return err
			},
		},
	}
}

// trusted reports whether every webhook of the configurations that exist has ca in its
// caBundle. A configuration that does not exist yet trusts nothing but calls nobody, so
// it does not hold up a CA switch.
func (m *Manager) trusted(ctx context.Context, ca *x509.Certificate) (bool, error) {
	if ca == nil {
		return false, nil
	}
	for _, c := range m.configurations() {
		hooks, err := c.get(ctx)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("get %s %s: %w", c.kind, c.name, err)
		}
		for _, h := range hooks {
			if !containsCert(parseCerts(h.caBundle), ca) {
				return false, nil
			}
		}
	}
	return true, nil
}

// publish sets caBundle of every webhook in both configurations to bundle. A
// configuration that does not exist yet is skipped; its creation wakes the leader.
func (m *Manager) publish(ctx context.Context, bundle []byte) error {
	var errs []error
	for _, c := range m.configurations() {
		hooks, err := c.get(ctx)
		if apierrors.IsNotFound(err) {
			m.log.Debug("webhook configuration not found; caBundle will be set when it appears", "kind", c.kind, "name", c.name)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("get %s %s: %w", c.kind, c.name, err))
			continue
		}
		patch, n := caBundlePatch(hooks, bundle)
		if n == 0 {
			continue
		}
		if err := c.patch(ctx, patch); err != nil {
			errs = append(errs, fmt.Errorf("patch caBundle of %s %s: %w", c.kind, c.name, err))
			continue
		}
		m.log.Info("caBundle published", "kind", c.kind, "name", c.name, "webhooks", n)
	}
	return errors.Join(errs...)
}

// caBundlePatch returns a JSON patch that sets caBundle on each webhook in hooks that
// lacks bundle, and how many it sets. A JSON patch rather than an update so that
// fields this client does not know survive; each change first tests the webhook's
// name, so a list reordered since it was read fails the patch instead of mixing up
// webhooks.
func caBundlePatch(hooks []webhookCA, bundle []byte) ([]byte, int) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	n := 0
	for i, h := range hooks {
		if bytes.Equal(h.caBundle, bundle) {
			continue
		}
		n++
		ops = append(ops,
			op{"test", fmt.Sprintf("/webhooks/%d/name", i), h.name},
			op{"add", fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), bundle})
	}
	if n == 0 {
		return nil, 0
	}
	// A slice of plain structs with strings and bytes always marshals.
	p, _ := json.Marshal(ops)
	return p, n
}

// containsCert reports whether certs holds cert.
func containsCert(certs []*x509.Certificate, cert *x509.Certificate) bool {
	for _, c := range certs {
		if c.Equal(cert) {
			return true
		}
	}
	return false
}

// collect maps a slice.
func collect[T, U any](in []T, f func(T) U) []U {
	out := make([]U, 0, len(in))
	for _, v := range in {
		out = append(out, f(v))
	}
	return out
}
