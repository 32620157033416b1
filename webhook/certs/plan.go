package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"time"
)

// material is the content of the Secret, parsed. Whatever does not parse is treated as
// absent, so a damaged Secret is repaired rather than wedging the webhook.
type material struct {
	// cas is the trust bundle (ca.crt) in order, oldest first.
	cas []*x509.Certificate
	// signer is the element of cas whose key is signerKey: the CA that signs new
	// serving certificates. nil when ca.key is missing or matches no CA.
	signer    *x509.Certificate
	signerKey crypto.Signer
	caKeyPEM  []byte
	// serving is the certificate in tls.crt, nil unless tls.crt and tls.key parse and
	// belong together.
	serving  *x509.Certificate
	certPEM  []byte
	keyPEM   []byte
	original map[string][]byte
}

// parseMaterial reads the Secret's data.
func parseMaterial(data map[string][]byte) material {
	m := material{original: data, cas: parseCerts(data[CABundleKey])}
	if key, err := parseKey(data[CAKeyKey]); err == nil {
		for _, ca := range m.cas {
			if ca.IsCA && samePublicKey(ca, key) {
				m.signer, m.signerKey, m.caKeyPEM = ca, key, data[CAKeyKey]
			}
		}
	}
	if pair, err := keyPair(data[TLSCertKey], data[TLSKeyKey]); err == nil {
		m.serving, m.certPEM, m.keyPEM = pair.Leaf, data[TLSCertKey], data[TLSKeyKey]
	}
	return m
}

// data encodes m as Secret data, keeping keys that are not ours.
func (m material) data() map[string][]byte {
	out := maps.Clone(m.original)
	if out == nil {
		out = map[string][]byte{}
	}
	out[CABundleKey] = encodeCerts(m.cas...)
	out[CAKeyKey] = m.caKeyPEM
	out[TLSCertKey] = m.certPEM
	out[TLSKeyKey] = m.keyPEM
	return out
}

// bundle is the PEM trust bundle published as caBundle.
func (m material) bundle() []byte {
	return encodeCerts(m.cas...)
}

// policy is what the planner needs from Config.
type policy struct {
	caName          string
	id              identity
	caValidity      time.Duration
	servingValidity time.Duration
	overlap         time.Duration
}

// decision is the planner's answer.
type decision struct {
	next material
	// write says whether the Secret's data must change.
	write bool
	// changes says, for the log, what changed and why.
	changes []string
	// wake is the next time something falls due, zero if nothing is scheduled.
	wake time.Time
}

// plan decides the next content of the Secret at time now. published reports whether
// every webhook in the configurations already trusts the current signer (cur.signer).
//
// The life of a CA, with O the overlap:
//
//	t        the CA is due (a third of its life left): a new CA joins the bundle and
//	         becomes the signer; the serving certificate stays on the old CA
//	t+O      the new CA is published everywhere, so the serving certificate is reissued
//	         by it; the old CA stays in the bundle for replicas still on the old one
//	t+2O     the old CA leaves the bundle
//
// Serving certificates are simply reissued by the signer when due: the CA they chain to
// does not change, so clients notice nothing.
func (p policy) plan(cur material, now time.Time, published bool) (decision, error) {
	next := cur
	next.cas = slices.Clone(cur.cas)
	var changes []string

	// Expired CAs help nobody.
	next.cas = slices.DeleteFunc(next.cas, func(ca *x509.Certificate) bool {
		if now.Before(ca.NotAfter) {
			return false
		}
		changes = append(changes, fmt.Sprintf("dropped expired CA %q", ca.Subject.CommonName))
		return true
	})
	if next.signer != nil && !now.Before(next.signer.NotAfter) {
		next.signer, next.signerKey, next.caKeyPEM = nil, nil, nil
	}
	// A serving certificate is worth keeping only while a client holding the bundle
	// would accept it.
	if s := next.serving; s != nil && (now.Before(s.NotBefore) || !now.Before(s.NotAfter) || issuerIn(s, next.cas) == nil) {
		next.serving, next.certPEM, next.keyPEM = nil, nil, nil
	}

	issue := func(why string) error {
		cert, key, err := newServing(p.id, next.signer, next.signerKey, now, p.servingValidity)
		if err != nil {
			return err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return err
		}
		next.serving, next.certPEM, next.keyPEM = cert, encodeCerts(cert), keyPEM
		changes = append(changes, fmt.Sprintf("issued serving certificate %x by CA %q valid until %s: %s",
			cert.SerialNumber, next.signer.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339), why))
		return nil
	}
	addCA := func(why string) error {
		ca, key, err := newCA(p.caName, now, p.caValidity)
		if err != nil {
			return err
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return err
		}
		next.cas = append(next.cas, ca)
		next.signer, next.signerKey, next.caKeyPEM = ca, key, keyPEM
		changes = append(changes, fmt.Sprintf("created CA %q valid until %s: %s",
			ca.Subject.CommonName, ca.NotAfter.UTC().Format(time.RFC3339), why))
		return nil
	}

	switch {
	case next.signer == nil:
		if err := addCA("no usable CA"); err != nil {
			return decision{}, err
		}
	case !now.Before(renewAt(next.signer)):
		// The old key is about to be replaced: a serving certificate that would fall due
		// during the overlap is renewed by the old CA now, because nothing can sign for
		// the old CA afterwards and the new one is not trusted yet.
		if s := next.serving; signedBy(s, next.signer) && (!now.Add(p.overlap).Before(renewAt(s)) || !p.id.matches(s)) {
			if err := issue("renewed by the outgoing CA ahead of a CA rotation"); err != nil {
				return decision{}, err
			}
		}
		old := next.signer.Subject.CommonName
		if err := addCA(fmt.Sprintf("CA %q has less than a third of its life left; serving certificates switch to the new CA after %s", old, p.overlap)); err != nil {
			return decision{}, err
		}
	}

	switchAt := issued(next.signer).Add(p.overlap)
	s := next.serving
	switch {
	case s == nil:
		if err := issue("no usable serving certificate"); err != nil {
			return decision{}, err
		}
	case !signedBy(s, next.signer):
		// Until every client trusts the new CA, the certificate by the old one stays,
		// even if it is due or names the wrong hosts: it still works where it matters.
		if published && !now.Before(switchAt) {
			if err := issue("the new CA has been published for the overlap"); err != nil {
				return decision{}, err
			}
		}
	case !now.Before(renewAt(s)):
		if err := issue("less than a third of its life left"); err != nil {
			return decision{}, err
		}
	case !p.id.matches(s):
		if err := issue("the wanted DNS names or IP addresses changed"); err != nil {
			return decision{}, err
		}
	}

	// CAs other than the signer and the serving certificate's issuer leave the bundle
	// an overlap after the serving certificate was issued: by then every replica serves
	// it, so nothing presents a certificate by those CAs any more.
	s = next.serving
	dropAt := issued(s).Add(p.overlap)
	servingCA := issuerIn(s, next.cas)
	if !now.Before(dropAt) {
		next.cas = slices.DeleteFunc(next.cas, func(ca *x509.Certificate) bool {
			if ca == next.signer || ca == servingCA {
				return false
			}
			changes = append(changes, fmt.Sprintf("dropped CA %q from the bundle after the overlap", ca.Subject.CommonName))
			return true
		})
	}

	d := decision{next: next, changes: changes}
	// Comparing bytes also catches what parsing skipped (a damaged entry, a key in
	// another encoding), so such a Secret is rewritten once in canonical form.
	want := next.data()
	d.write = !maps.EqualFunc(cur.original, want, bytes.Equal)
	if d.write && len(changes) == 0 {
		d.changes = append(d.changes, "rewrote damaged or non-canonical entries")
	}

	soon := func(t time.Time) {
		if t.After(now) && (d.wake.IsZero() || t.Before(d.wake)) {
			d.wake = t
		}
	}
	soon(renewAt(next.signer))
	for _, ca := range next.cas {
		soon(ca.NotAfter)
	}
	if signedBy(s, next.signer) {
		soon(renewAt(s))
	} else {
		soon(switchAt)
	}
	soon(s.NotAfter)
	if len(next.cas) > 1 {
		soon(dropAt)
	}
	return d, nil
}

// issuerIn returns the CA in cas that signed cert, or nil.
func issuerIn(cert *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if signedBy(cert, ca) {
			return ca
		}
	}
	return nil
}
