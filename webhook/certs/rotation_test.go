package certs

import (
	"crypto/x509"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestServingRotation(t *testing.T) {
	tests := map[string]struct {
		// at is when the second reconcile runs, given the first serving certificate.
		at       func(s *x509.Certificate) time.Time
		extraDNS []string
		wantNew  bool
	}{
		"a serving certificate with more than a third of its life left is kept": {
			at: func(s *x509.Certificate) time.Time { return renewAt(s).Add(-time.Second) },
		},
		"a serving certificate with less than a third left is renewed by the same CA": {
			at:      renewAt,
			wantNew: true,
		},
		"an expired serving certificate is replaced": {
			at:      func(s *x509.Certificate) time.Time { return s.NotAfter.Add(time.Second) },
			wantNew: true,
		},
		"a new DNS name reissues the serving certificate": {
			at:       func(s *x509.Certificate) time.Time { return issued(s).Add(time.Minute) },
			extraDNS: []string{"webhook.example.com"},
			wantNew:  true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			client := fake.NewClientset(webhookConfigurations()...)
			clock := newFakeClock()
			cfg := testConfig(t, client, clock, "a")
			reconcileOK(t, newTestManager(t, cfg))
			before := readState(t, client)
			bundlesBefore := caBundles(t, client)

			clock.Set(tc.at(before.serving))
			cfg.DNSNames = append(cfg.DNSNames, tc.extraDNS...)
			m := newTestManager(t, cfg)
			wake, err := m.reconcile(t.Context())
			if err != nil {
				t.Fatal(err)
			}

			after := readState(t, client)
			if got := !after.serving.Equal(before.serving); got != tc.wantNew {
				t.Fatalf("new serving certificate = %v, want %v", got, tc.wantNew)
			}
			if !after.signer.Equal(before.signer) || len(after.cas) != 1 {
				t.Errorf("CA changed: %v", names(after.cas))
			}
			if !signedBy(after.serving, after.signer) {
				t.Error("serving certificate not signed by the CA")
			}
			for _, dns := range append([]string{testServerName}, tc.extraDNS...) {
				if err := after.serving.VerifyHostname(dns); err != nil {
					t.Errorf("serving certificate: %v", err)
				}
			}
			for i, b := range caBundles(t, client) {
				if string(b) != string(bundlesBefore[i]) {
					t.Errorf("webhook %d caBundle changed on a serving rotation", i)
				}
			}
			if want := renewAt(after.serving); !wake.Equal(want) {
				t.Errorf("next check at %s, want the renewal time %s", wake, want)
			}
		})
	}
}

func TestCARotationTimeline(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	reconcileOK(t, m)
	ca1 := readState(t, client).signer
	due := renewAt(ca1)
	walk(t, m, client, clock, due.Add(-time.Second))

	steps := []struct {
		at          time.Time
		wantCAs     []*x509.Certificate // nil entries are "the new CA"
		wantServing string              // "old" or "new": the CA of the serving certificate
	}{
		{at: due.Add(-time.Second), wantCAs: []*x509.Certificate{ca1}, wantServing: "old"},
		{at: due, wantCAs: []*x509.Certificate{ca1, nil}, wantServing: "old"},
		{at: due.Add(testOverlap - time.Second), wantCAs: []*x509.Certificate{ca1, nil}, wantServing: "old"},
		{at: due.Add(testOverlap), wantCAs: []*x509.Certificate{ca1, nil}, wantServing: "new"},
		{at: due.Add(2*testOverlap - time.Second), wantCAs: []*x509.Certificate{ca1, nil}, wantServing: "new"},
		{at: due.Add(2 * testOverlap), wantCAs: []*x509.Certificate{nil}, wantServing: "new"},
	}
	var ca2 *x509.Certificate
	for _, step := range steps {
		clock.Set(step.at)
		wake, err := m.reconcile(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		st := readState(t, client)
		at := step.at.Sub(due)
		if st.signer.Equal(ca1) {
			if at >= 0 {
				t.Fatalf("at due%+v: old CA still signs", at)
			}
		} else {
			if ca2 == nil {
				ca2 = st.signer
			}
			if !st.signer.Equal(ca2) {
				t.Fatalf("at due%+v: a third CA %q", at, st.signer.Subject.CommonName)
			}
		}
		if len(st.cas) != len(step.wantCAs) {
			t.Fatalf("at due%+v: bundle %q, want %d CAs", at, names(st.cas), len(step.wantCAs))
		}
		for i, want := range step.wantCAs {
			if want == nil {
				want = ca2
			}
			if !st.cas[i].Equal(want) {
				t.Errorf("at due%+v: bundle %q, CA %d is not %q", at, names(st.cas), i, want.Subject.CommonName)
			}
		}
		servingCA := map[string]*x509.Certificate{"old": ca1, "new": ca2}[step.wantServing]
		if !signedBy(st.serving, servingCA) {
			t.Errorf("at due%+v: serving certificate by %q, want the %s CA", at, st.serving.Issuer.CommonName, step.wantServing)
		}
		for i, b := range caBundles(t, client) {
			if got := parseCerts(b); len(got) != len(st.cas) {
				t.Errorf("at due%+v: webhook %d caBundle has %q, want %q", at, i, names(got), names(st.cas))
			}
		}
		if !wake.After(step.at) {
			t.Errorf("at due%+v: next check %s is not in the future", at, wake)
		}
	}
}

func TestRotationNeverLeavesAClientBehind(t *testing.T) {
	// Walk three CA lifetimes in steps longer than the overlap. At every step both of
	// these must hold, or a request fails somewhere:
	//   - the API server still on the previous caBundle accepts the new serving
	//     certificate (replicas switch before API servers see a new bundle)
	//   - the new caBundle accepts the previous serving certificate (API servers see a
	//     new bundle before every replica has switched)
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	reconcileOK(t, m)
	ca1 := readState(t, client).signer
	end := clock.Now().Add(3 * testCAValidity)
	cas := walk(t, m, client, clock, end)
	if cas < 4 {
		t.Errorf("saw %d CAs in three CA lifetimes, want at least 4", cas)
	}
	if containsCert(readState(t, client).cas, ca1) {
		t.Error("the first CA is still in the bundle")
	}
}

func TestCASwitchWaitsUntilTheBundleIsPublished(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	var failPatches atomic.Bool
	client.PrependReactor("patch", "validatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failPatches.Load() {
			return true, nil, errors.New("apiserver unavailable")
		}
		return false, nil, nil
	})
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	reconcileOK(t, m)
	ca1 := readState(t, client).signer
	due := renewAt(ca1)
	walk(t, m, client, clock, due.Add(-time.Second))

	failPatches.Store(true)
	clock.Set(due)
	if _, err := m.reconcile(t.Context()); err == nil {
		t.Fatal("reconcile hid a failed caBundle patch")
	}
	clock.Set(due.Add(2 * testOverlap))
	_, _ = m.reconcile(t.Context())
	if st := readState(t, client); !signedBy(st.serving, ca1) || len(st.cas) != 2 {
		t.Fatalf("with the new CA unpublished: serving by %q, bundle %q; want the old CA and both",
			st.serving.Issuer.CommonName, names(st.cas))
	}

	failPatches.Store(false)
	reconcileOK(t, m) // publishes
	reconcileOK(t, m) // sees it published and switches
	if st := readState(t, client); signedBy(st.serving, ca1) {
		t.Error("serving certificate still by the old CA after the bundle was published")
	}
}

func TestServingDueDuringOverlapIsRenewedByTheOutgoingCA(t *testing.T) {
	t0 := newFakeClock().Now()
	p := policy{
		caName:          "podarmor-webhook",
		id:              identity{commonName: testServerName, dnsNames: []string{testServerName}, ips: normaliseIPs([]net.IP{net.ParseIP("127.0.0.1")})},
		caValidity:      testCAValidity,
		servingValidity: testServingValidity,
		overlap:         testOverlap,
	}
	ca, caKey, err := newCA(p.caName, t0, p.caValidity)
	if err != nil {
		t.Fatal(err)
	}
	due := renewAt(ca)
	// A serving certificate that falls due half an overlap after the CA.
	issuedAt := due.Add(testOverlap/2 - (p.servingValidity - p.servingValidity/3))
	serving, servingKey, err := newServing(p.id, ca, caKey, issuedAt, p.servingValidity)
	if err != nil {
		t.Fatal(err)
	}
	if got := renewAt(serving); !got.After(due) || !got.Before(due.Add(testOverlap)) {
		t.Fatalf("test setup: serving certificate due at due%+v, want within the overlap", got.Sub(due))
	}
	caKeyPEM, _ := encodeKey(caKey)
	keyPEM, _ := encodeKey(servingKey)
	cur := parseMaterial(map[string][]byte{
		CABundleKey: encodeCerts(ca), CAKeyKey: caKeyPEM,
		TLSCertKey: encodeCerts(serving), TLSKeyKey: keyPEM,
	})

	d, err := p.plan(cur, due, true)
	if err != nil {
		t.Fatal(err)
	}
	next := d.next
	if next.signer.Equal(ca) || len(next.cas) != 2 {
		t.Fatalf("CA rotation did not start: bundle %q", names(next.cas))
	}
	if next.serving.Equal(serving) || !signedBy(next.serving, ca) {
		t.Errorf("serving certificate: renewed %v, by %q; want renewed by the outgoing CA",
			!next.serving.Equal(serving), next.serving.Issuer.CommonName)
	}
	if !renewAt(next.serving).After(due.Add(testOverlap)) {
		t.Error("the renewed serving certificate falls due within the overlap again")
	}
}

// walk reconciles in twelve-hour steps until the clock reaches end, checking at each
// step that a rotation strands neither lagging API servers nor lagging replicas, and
// returns how many CAs it saw.
func walk(t *testing.T, m *Manager, client *fake.Clientset, clock *fakeClock, end time.Time) int {
	t.Helper()
	seen := map[string]bool{}
	prevServing := readState(t, client).serving
	prevBundles := caBundles(t, client)
	for now := clock.Now(); now.Before(end); {
		now = now.Add(12 * time.Hour)
		if now.After(end) {
			now = end
		}
		clock.Set(now)
		reconcileOK(t, m)
		st := readState(t, client)
		bundles := caBundles(t, client)
		for _, ca := range st.cas {
			seen[string(ca.Raw)] = true
		}
		for i := range bundles {
			verifyAgainst(t, now, st.serving, prevBundles[i], "new serving certificate, previous caBundle")
			verifyAgainst(t, now, prevServing, bundles[i], "previous serving certificate, new caBundle")
		}
		prevServing, prevBundles = st.serving, bundles
	}
	return len(seen)
}

// verifyAgainst fails the test unless cert verifies against bundle at now.
func verifyAgainst(t *testing.T, now time.Time, cert *x509.Certificate, bundle []byte, what string) {
	t.Helper()
	_, err := cert.Verify(x509.VerifyOptions{DNSName: testServerName, Roots: pool(parseCerts(bundle)...), CurrentTime: now})
	if err != nil {
		t.Fatalf("at %s: %s: %v", now.Format(time.RFC3339), what, err)
	}
}
