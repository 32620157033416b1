package certs

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestRunServesTheSecretAndFollowsRotations(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	if m.Ready() {
		t.Fatal("ready before Run")
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Fatal("GetCertificate returned a certificate before Run")
	}
	run(t, m)

	eventually(t, "the first certificate is served", m.Ready)
	first := readState(t, client).serving
	eventually(t, "the Secret's certificate is served", func() bool { return first.Equal(served(m)) })
	if !bytes.Equal(m.CABundle(), getSecret(t, client).Data[CABundleKey]) {
		t.Error("CABundle differs from the Secret's ca.crt")
	}

	clock.Set(renewAt(first))
	eventually(t, "the renewed certificate is served", func() bool {
		s := served(m)
		return s != nil && !s.Equal(first) && s.Equal(readState(t, client).serving)
	})
}

func TestRunPublishesToAConfigurationCreatedLater(t *testing.T) {
	client := fake.NewClientset()
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	run(t, m)
	eventually(t, "a certificate is served", m.Ready)

	for _, obj := range webhookConfigurations() {
		if err := client.Tracker().Add(obj); err != nil {
			t.Fatal(err)
		}
	}
	want := getSecret(t, client).Data[CABundleKey]
	eventually(t, "every webhook has the caBundle", func() bool {
		for _, b := range caBundles(t, client) {
			if !bytes.Equal(b, want) {
				return false
			}
		}
		return true
	})
}

func TestReplicasShareTheSecretAndHandOverLeadership(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	a := newTestManager(t, testConfig(t, client, clock, "a"))
	stopA := run(t, a)
	eventually(t, "replica a serves", a.Ready)
	b := newTestManager(t, testConfig(t, client, clock, "b"))
	run(t, b)
	eventually(t, "replica b serves", b.Ready)

	first := readState(t, client).serving
	if !served(a).Equal(first) || !served(b).Equal(first) {
		t.Fatal("replicas serve different certificates")
	}
	if h := leaseHolder(t, client); h != "a" {
		t.Fatalf("lease held by %q, want a", h)
	}

	stopA()
	eventually(t, "replica b leads", func() bool { return leaseHolder(t, client) == "b" })
	clock.Set(renewAt(first))
	eventually(t, "replica b renews and serves the new certificate", func() bool {
		s := served(b)
		return s != nil && !s.Equal(first)
	})
}

func TestRunKeepsServingWhileADeletedSecretIsRecreated(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	m := newTestManager(t, testConfig(t, client, clock, "a"))
	run(t, m)
	eventually(t, "a certificate is served", m.Ready)
	first := served(m)

	if err := client.CoreV1().Secrets(testNamespace).Delete(t.Context(), DefaultSecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if served(m) == nil {
		t.Fatal("nothing served right after the Secret was deleted")
	}
	eventually(t, "a new certificate is served", func() bool {
		s := served(m)
		return s != nil && !s.Equal(first)
	})
	if _, err := client.CoreV1().Secrets(testNamespace).Get(t.Context(), DefaultSecretName, metav1.GetOptions{}); err != nil {
		t.Errorf("Secret not recreated: %v", err)
	}
}

func TestRunTwiceIsRefused(t *testing.T) {
	client := fake.NewClientset()
	m := newTestManager(t, testConfig(t, client, newFakeClock(), "a"))
	run(t, m)
	eventually(t, "a certificate is served", m.Ready)
	if err := m.Run(t.Context()); err == nil {
		t.Error("a second Run was accepted")
	}
}

func TestTLSHandshakeAcrossCARotation(t *testing.T) {
	client := fake.NewClientset(webhookConfigurations()...)
	clock := newFakeClock()
	cfg := testConfig(t, client, clock, "a")
	// Serving certificates as long-lived as the CA, so the clock can jump straight to
	// the CA's due date without the serving certificate expiring on the way.
	cfg.ServingValidity = cfg.CAValidity
	m := newTestManager(t, cfg)
	run(t, m)
	eventually(t, "a certificate is served", m.Ready)
	addr := serveTLS(t, m)

	oldBundle := parseCerts(m.CABundle())
	ca1 := oldBundle[0]
	for _, name := range []string{testServerName, ""} { // "" dials by IP: 127.0.0.1
		if err := handshake(addr, name, oldBundle, clock); err != nil {
			t.Fatalf("before rotation, server name %q: %v", name, err)
		}
	}
	// A connection made now must survive everything that follows.
	inflight := dial(t, addr, oldBundle, clock)

	due := renewAt(ca1)
	clock.Set(due)
	eventually(t, "both CAs are in the bundle", func() bool { return len(parseCerts(m.CABundle())) == 2 })
	bothBundle := parseCerts(m.CABundle())
	eventually(t, "both CAs are in every caBundle", func() bool {
		for _, b := range caBundles(t, client) {
			if len(parseCerts(b)) != 2 {
				return false
			}
		}
		return true
	})
	if !signedBy(served(m), ca1) {
		t.Fatal("during the overlap the served certificate is not by the old CA")
	}
	if err := handshake(addr, testServerName, oldBundle, clock); err != nil {
		t.Errorf("during the overlap, a client with the old bundle: %v", err)
	}
	if err := handshake(addr, testServerName, bothBundle, clock); err != nil {
		t.Errorf("during the overlap, a client with the new bundle: %v", err)
	}

	clock.Set(due.Add(testOverlap))
	eventually(t, "the certificate by the new CA is served", func() bool { return !signedBy(served(m), ca1) })
	if err := handshake(addr, testServerName, bothBundle, clock); err != nil {
		t.Errorf("after the switch, a client with the new bundle: %v", err)
	}
	var unknown x509.UnknownAuthorityError
	if err := handshake(addr, testServerName, oldBundle, clock); !errors.As(err, &unknown) {
		t.Errorf("after the switch, a client with only the old CA: %v; want unknown authority", err)
	}

	clock.Set(due.Add(2 * testOverlap))
	eventually(t, "the old CA leaves the bundle", func() bool { return len(parseCerts(m.CABundle())) == 1 })
	newBundle := parseCerts(m.CABundle())
	if newBundle[0].Equal(ca1) {
		t.Fatal("the old CA stayed, the new one left")
	}
	if err := handshake(addr, "", newBundle, clock); err != nil {
		t.Errorf("after the old CA left, a client with the new bundle: %v", err)
	}
	ping(t, inflight)
}

// leaseHolder returns the Lease's holder, "" if none.
func leaseHolder(t *testing.T, client *fake.Clientset) string {
	t.Helper()
	l, err := client.CoordinationV1().Leases(testNamespace).Get(t.Context(), DefaultLeaseName, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// serveTLS runs an echo server on loopback with m's certificates and returns its address.
func serveTLS(t *testing.T, m *Manager) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// clientConfig trusts roots and checks dates on the fake clock.
func clientConfig(serverName string, roots []*x509.Certificate, clock *fakeClock) *tls.Config {
	return &tls.Config{ServerName: serverName, RootCAs: pool(roots...), Time: clock.Now}
}

// handshake connects, verifies the server against roots and exchanges a message.
func handshake(addr, serverName string, roots []*x509.Certificate, clock *fakeClock) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, clientConfig(serverName, roots, clock))
	if err != nil {
		return err
	}
	defer conn.Close()
	return echo(conn)
}

// dial returns an open connection, closed when the test ends.
func dial(t *testing.T, addr string, roots []*x509.Certificate, clock *fakeClock) *tls.Conn {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, clientConfig(testServerName, roots, clock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ping(t, conn)
	return conn
}

// ping fails the test unless conn still echoes.
func ping(t *testing.T, conn *tls.Conn) {
	t.Helper()
	if err := echo(conn); err != nil {
		t.Fatalf("established connection: %v", err)
	}
}

func echo(conn *tls.Conn) error {
	if err := conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo garbled")
	}
	return nil
}
