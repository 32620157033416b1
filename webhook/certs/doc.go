// Package certs is the TLS of podarmor-webhook: the serving certificate the API server
// checks against the webhook configurations' caBundle, kept valid without restarts.
//
// # Secret mode (the default)
//
// The webhook is its own CA. One Secret holds everything:
//
//	ca.crt   the trust bundle: one CA, two during a CA rotation
//	ca.key   the key of the CA that signs new serving certificates
//	tls.crt  the serving certificate (ECDSA P-256), for the Service's DNS names
//	         <svc>, <svc>.<ns>, <svc>.<ns>.svc, <svc>.<ns>.svc.cluster.local and any
//	         extra names and IPs from Config
//	tls.key  its key
//
// Every replica watches that Secret and serves its tls.crt (Manager.GetCertificate), so
// serving is stateless and a new certificate takes effect on the next handshake. One
// replica, elected with a Lease, does the bookkeeping: it creates the Secret if it is
// missing, renews certificates when less than a third of their life is left, and sets
// caBundle on every webhook of the named mutating and validating webhook configurations
// (and no others). A configuration that does not exist yet is not an error: the leader
// watches for it and sets caBundle when it appears.
//
// Renewing a serving certificate needs no care: the new one chains to the same CA. A CA
// rotation must not break a client that has not seen the new CA yet (an API server's
// informer, a scraper with the bundle from a mounted Secret), so it goes in steps of one
// Config.Overlap O (default 24 hours; CA 10 years, serving certificate 1 year):
//
//	t      the CA is due: a new CA is added to ca.crt and becomes the signer; caBundle
//	       now holds both; replicas still serve the certificate by the old CA
//	t+O    once every webhook's caBundle holds the new CA, the serving certificate is
//	       reissued by it; replicas switch as they see the Secret
//	t+2O   the old CA leaves ca.crt and caBundle
//
// A serving certificate that would fall due during the overlap is renewed by the old CA
// at t, while its key is still at hand.
//
// Replicas that race (to create the Secret, or two leaders during a hand-over) converge:
// every write is optimistic, and the loser reads the winner's Secret and plans again.
//
// # File mode (cert-manager)
//
// With Config.CertFile and Config.KeyFile set, the Manager serves those PEM files and
// rereads them every few seconds; it touches no API object and needs no Client. Issue
// the certificate with cert-manager, mount its Secret, and let cert-manager's CA
// injector fill caBundle by annotating both webhook configurations with
// cert-manager.io/inject-ca-from: <namespace>/<certificate>.
//
// # Permissions (Secret mode)
//
// In Namespace: secrets get, list, watch, update (may be limited to the Secret by
// resourceNames) and create (cannot be); leases get, create, update. Cluster-wide:
// mutatingwebhookconfigurations and validatingwebhookconfigurations get, list, watch,
// patch, limited to the two names.
package certs
