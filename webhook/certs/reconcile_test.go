package certs

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestFirstStartCreatesSecretAndPublishesBundle(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))

	reconcileOK(t, m)

	secret := getSecret(t, client)
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type = %q, want %q", secret.Type, corev1.SecretTypeTLS)
	}
	for _, k := range []string{CABundleKey, CAKeyKey, TLSCertKey, TLSKeyKey} {
		if len(secret.Data[k]) == 0 {
			t.Errorf("Secret has no %s", k)
		}
	}
	st := readState(t, client)
	if len(st.cas) != 1 {
		t.Fatalf("bundle has %d CAs, want 1", len(st.cas))
	}
	for _, name := range []string{
		"podarmor-webhook", "podarmor-webhook.podarmor-system", testServerName,
		"podarmor-webhook.podarmor-system.svc.cluster.local", "localhost", "127.0.0.1",
	} {
		_, err := st.serving.Verify(x509.VerifyOptions{
			DNSName: name, Roots: pool(st.cas...), CurrentTime: clock.Now(),
		})
		if err != nil {
			t.Errorf("serving certificate does not verify for %s: %v", name, err)
		}
	}
	if st.serving.SerialNumber.BitLen() > 128 || st.serving.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("serving certificate: serial of %d bits, key %s; want at most 128 bits and ECDSA",
			st.serving.SerialNumber.BitLen(), st.serving.PublicKeyAlgorithm)
	}

	for i, b := range caBundles(t, client) {
		if !bytes.Equal(b, secret.Data[CABundleKey]) {
			t.Errorf("webhook %d caBundle differs from ca.crt", i)
		}
	}
	other, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(t.Context(), "someone-else", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(other.Webhooks[0].ClientConfig.CABundle); got != "theirs" {
		t.Errorf("another configuration's caBundle changed to %q", got)
	}
}

func TestSecondManagerReusesSecret(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	reconcileOK(t, newTestManager(t, testConfig(t, client, clock, "a")))
	before := getSecret(t, client)
	client.ClearActions()

	reconcileOK(t, newTestManager(t, testConfig(t, client, clock, "b")))

	after := getSecret(t, client)
	if !equalData(before.Data, after.Data) {
		t.Error("a second manager changed a valid Secret")
	}
	for _, a := range client.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("a second manager with nothing to do sent %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestMissingConfigurationIsRetriedNotAnError(t *testing.T) {
	client := fake.NewClientset()
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))

	reconcileOK(t, m)
	for _, obj := range webhookConfigurations() {
		if err := client.Tracker().Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	reconcileOK(t, m)

	want := getSecret(t, client).Data[CABundleKey]
	for i, b := range caBundles(t, client) {
		if !bytes.Equal(b, want) {
			t.Errorf("webhook %d caBundle not set after its configuration appeared", i)
		}
	}
}

func TestRacingReplicasConverge(t *testing.T) {
	const replicas = 8
	t.Run("replicas that all read before any created adopt the first one's Secret", func(t *testing.T) {
		client := fake.NewClientset(webhookConfigurations()...)
		clock := newFakeClock()
		// The fake serialises calls, so the race is staged: each replica's first read
		// says "not found", as if it had read before the others created.
		var stale atomic.Bool
		client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			if stale.CompareAndSwap(true, false) {
				return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, DefaultSecretName)
			}
			return false, nil, nil
		})
		var creates atomic.Int32
		client.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
			creates.Add(1)
			return false, nil, nil
		})

		var winner map[string][]byte
		for i := range replicas {
			stale.Store(true)
			reconcileOK(t, newTestManager(t, testConfig(t, client, clock, fmt.Sprint("replica-", i))))
			if i == 0 {
				winner = getSecret(t, client).Data
			}
		}

		if n := creates.Load(); n != replicas {
			t.Errorf("%d creates, want one per replica", n)
		}
		if !equalData(getSecret(t, client).Data, winner) {
			t.Error("a replica that lost the race replaced the winner's Secret")
		}
		for i, b := range caBundles(t, client) {
			if !bytes.Equal(b, winner[CABundleKey]) {
				t.Errorf("webhook %d caBundle is not the winner's bundle", i)
			}
		}
	})

	t.Run("replicas reconciling concurrently agree on one Secret", func(t *testing.T) {
		client := fake.NewClientset(webhookConfigurations()...)
		clock := newFakeClock()
		var wg sync.WaitGroup
		errs := make([]error, replicas)
		for i := range replicas {
			m := newTestManager(t, testConfig(t, client, clock, fmt.Sprint("replica-", i)))
			wg.Go(func() { _, errs[i] = m.reconcile(t.Context()) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
		}
		st := readState(t, client)
		if len(st.cas) != 1 {
			t.Errorf("bundle has %d CAs, want 1", len(st.cas))
		}
		want := getSecret(t, client).Data[CABundleKey]
		for i, b := range caBundles(t, client) {
			if !bytes.Equal(b, want) {
				t.Errorf("webhook %d caBundle is not the Secret's bundle", i)
			}
		}
	})
}

func TestUpdateConflictIsRetriedByReading(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	reconcileOK(t, m)

	var conflicts atomic.Int32
	client.PrependReactor("update", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts.Add(1) == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, DefaultSecretName, fmt.Errorf("changed"))
		}
		return false, nil, nil
	})
	old := readState(t, client).serving
	clock.Set(renewAt(old))
	reconcileOK(t, m)

	if conflicts.Load() != 2 {
		t.Errorf("%d updates, want a conflict and a retry", conflicts.Load())
	}
	if readState(t, client).serving.Equal(old) {
		t.Error("serving certificate not renewed after the conflict")
	}
}

func TestDamagedSecretIsRepaired(t *testing.T) {
	tests := map[string]struct {
		damage      func(data map[string][]byte)
		wantSameCA  bool
		wantSameTLS bool
	}{
		"a missing serving key reissues the serving certificate by the same CA": {
			damage:     func(d map[string][]byte) { delete(d, TLSKeyKey) },
			wantSameCA: true,
		},
		"a serving key of another certificate reissues it": {
			damage: func(d map[string][]byte) {
				key, _ := newKeyPEM(t)
				d[TLSKeyKey] = key
			},
			wantSameCA: true,
		},
		"garbage in ca.key makes a new CA": {
			damage: func(d map[string][]byte) { d[CAKeyKey] = []byte("garbage") },
			// The serving certificate still chains to the old CA, which stays in the
			// bundle, so it is kept until the new CA has been published.
			wantSameTLS: true,
		},
		"a comment in the bundle is normalised away without new certificates": {
			damage: func(d map[string][]byte) {
				d[CABundleKey] = append(append([]byte{}, d[CABundleKey]...), "\n# comment\n"...)
			},
			wantSameCA:  true,
			wantSameTLS: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			client := fake.NewClientset(webhookConfigurations()...)
			clock := newFakeClock()
			m := newTestManager(t, testConfig(t, client, clock, "a"))
			reconcileOK(t, m)
			before := readState(t, client)

			s := getSecret(t, client)
			tc.damage(s.Data)
			if _, err := client.CoreV1().Secrets(testNamespace).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			reconcileOK(t, m)

			after := readState(t, client)
			if got := after.signer.Equal(before.signer); got != tc.wantSameCA {
				t.Errorf("same signing CA = %v, want %v", got, tc.wantSameCA)
			}
			if got := after.serving.Equal(before.serving); got != tc.wantSameTLS {
				t.Errorf("same serving certificate = %v, want %v", got, tc.wantSameTLS)
			}
			if issuerIn(after.serving, after.cas) == nil {
				t.Error("serving certificate does not chain to the bundle")
			}
			// A second pass has nothing left to do.
			client.ClearActions()
			reconcileOK(t, m)
			for _, a := range client.Actions() {
				if a.GetVerb() == "update" {
					t.Errorf("the repaired Secret was written again")
				}
			}
		})
	}
}

// equalData compares Secret data.
func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// newKeyPEM returns a fresh PEM private key.
func newKeyPEM(t *testing.T) ([]byte, error) {
	t.Helper()
	_, key, err := newCA("test", newFakeClock().Now(), testCAValidity)
	if err != nil {
		t.Fatal(err)
	}
	return encodeKey(key)
}
