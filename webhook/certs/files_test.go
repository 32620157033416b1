package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFileModeReloadsChangedFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	clock := newFakeClock()
	ca, caKey, err := newCA("test", clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := identity{commonName: testServerName, dnsNames: []string{testServerName}}
	type pair struct {
		cert    *x509.Certificate
		certPEM []byte
		keyPEM  []byte
	}
	newPair := func() pair {
		cert, key, err := newServing(id, ca, caKey, clock.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pair{cert, encodeCerts(cert), keyPEM}
	}
	write := func(certPEM, keyPEM []byte) {
		// Like kubelet's atomic writer: each file appears whole.
		for name, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
			tmp := name + ".tmp"
			if err := os.WriteFile(tmp, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, name); err != nil {
				t.Fatal(err)
			}
		}
	}

	first, second, third := newPair(), newPair(), newPair()
	write(first.certPEM, first.keyPEM)
	m := newTestManager(t, Config{
		CertFile:         certFile,
		KeyFile:          keyFile,
		FilePollInterval: 10 * time.Millisecond,
		Logger:           testLogger(t),
	})
	if m.CABundle() != nil {
		t.Error("file mode has a CA bundle")
	}
	run(t, m)
	eventually(t, "the first pair is served", func() bool { return first.cert.Equal(served(m)) })

	write(second.certPEM, second.keyPEM)
	eventually(t, "the second pair is served", func() bool { return second.cert.Equal(served(m)) })

	// A certificate without its key yet (a writer that is not atomic across files)
	// must not replace a working pair.
	write(third.certPEM, second.keyPEM)
	for range 5 {
		time.Sleep(10 * time.Millisecond)
		if !second.cert.Equal(served(m)) {
			t.Fatal("a mismatched pair replaced the served certificate")
		}
	}
	write(third.certPEM, third.keyPEM)
	eventually(t, "the third pair is served", func() bool { return third.cert.Equal(served(m)) })

	addr := serveTLS(t, m)
	if err := handshake(addr, testServerName, []*x509.Certificate{ca}, clock); err != nil {
		t.Errorf("handshake with the file certificate: %v", err)
	}
}

func TestFileModeWaitsForMissingFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	m := newTestManager(t, Config{CertFile: certFile, KeyFile: keyFile, FilePollInterval: 10 * time.Millisecond, Logger: testLogger(t)})
	run(t, m)
	time.Sleep(30 * time.Millisecond)
	if m.Ready() {
		t.Fatal("ready without files")
	}

	clock := newFakeClock()
	ca, caKey, err := newCA("test", clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := newServing(identity{commonName: "x", dnsNames: []string{"x"}}, ca, caKey, clock.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := encodeKey(key)
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, encodeCerts(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the files are served once they appear", func() bool { return cert.Equal(served(m)) })
}
