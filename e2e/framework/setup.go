package framework

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminUser is the user the admin token authenticates as; it is in group system:masters.
const AdminUser = "podarmor-admin"

// serviceClusterIPRange and the first address in it, which the apiserver gives the
// "kubernetes" Service; kubeadm's defaults.
const (
	serviceClusterIPRange = "10.96.0.0/12"
	kubernetesServiceIP   = "10.96.0.1"
)

var versionPattern = regexp.MustCompile(`^v1\.[0-9]+\.[0-9]+$`)

// SetupConfig says where and for which version to lay out a control plane.
type SetupConfig struct {
	// Dir is an empty or missing directory that receives the certificates, the token
	// file, the kubeconfig and etcd's data. Required.
	Dir string
	// BinDir holds etcd and kube-apiserver (see hack/kube-binaries.sh). Required.
	BinDir string
	// Version is the Kubernetes release in BinDir, e.g. "v1.37.2". Required.
	Version string
	// APIServerFlags are appended to the kube-apiserver command line; a flag given
	// twice takes its last value, so these override the defaults of [NewSetup].
	APIServerFlags []string
	// Cluster, when set, lays out a control plane for a cluster with a node that is not
	// on the host: see ClusterConfig.
	Cluster *ClusterConfig
}

func (c SetupConfig) defaults() (SetupConfig, error) {
	switch {
	case c.Dir == "":
		return c, errors.New("setup: Dir is required")
	case c.BinDir == "":
		return c, errors.New("setup: BinDir is required")
	case !versionPattern.MatchString(c.Version):
		return c, fmt.Errorf("setup: Version %q is not a Kubernetes release such as v1.37.2", c.Version)
	}
	if c.Cluster != nil {
		if err := c.Cluster.validate(); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Setup is a control plane laid out on disk and not yet started: its files, the command
// lines that start etcd and kube-apiserver, and how to reach the API as the admin.
type Setup struct {
	// Dir is SetupConfig.Dir.
	Dir string
	// Version is the Kubernetes release the command lines run.
	Version string
	// Etcd and APIServer are the command lines, binary first.
	Etcd, APIServer []string
	// EtcdURL is the etcd client URL; APIServerURL the API's https URL.
	EtcdURL, APIServerURL string
	// Kubeconfig is the path of the admin kubeconfig.
	Kubeconfig string
	// Config reaches the API as the admin (the kubeconfig's content).
	Config *rest.Config
	// Cluster is set when SetupConfig.Cluster was: the rest of a cluster's control
	// plane and the node's files.
	Cluster *ClusterSetup
}

// NewSetup writes a control plane's files into cfg.Dir and returns its command lines.
// Ports are free loopback ports chosen now; start the processes soon, before another
// program takes them.
//
// Files in Dir: pki/ (ca.crt, ca.key, apiserver.crt, apiserver.key, sa.key, sa.pub),
// tokens.csv, admin.kubeconfig, etcd/ (etcd's data); with SetupConfig.Cluster also
// scheduler.kubeconfig, controller-manager.kubeconfig, egress-selector.yaml and node/
// (see ClusterSetup).
func NewSetup(cfg SetupConfig) (*Setup, error) {
	cfg, err := cfg.defaults()
	if err != nil {
		return nil, err
	}
	pki := filepath.Join(cfg.Dir, "pki")
	etcdData := filepath.Join(cfg.Dir, "etcd")
	for _, d := range []string{pki, etcdData} {
		// etcd refuses a data directory that others can read.
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("setup: %w", err)
		}
	}

	ports, err := freePorts(3)
	if err != nil {
		return nil, fmt.Errorf("setup: pick ports: %w", err)
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	s := &Setup{
		Dir:          cfg.Dir,
		Version:      cfg.Version,
		EtcdURL:      "http://127.0.0.1:" + strconv.Itoa(etcdClient),
		APIServerURL: "https://127.0.0.1:" + strconv.Itoa(apiPort),
		Kubeconfig:   filepath.Join(cfg.Dir, "admin.kubeconfig"),
	}

	f := func(name string) string { return filepath.Join(pki, name) }
	var extraIPs []net.IP
	if cfg.Cluster != nil {
		extraIPs = append(extraIPs, net.ParseIP(cfg.Cluster.AdvertiseAddress))
	}
	caPEM, err := writePKI(pki, extraIPs)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	token, err := randomHex(32)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	tokens := filepath.Join(cfg.Dir, "tokens.csv")
	// token,user,uid,"groups"
	lines := []string{fmt.Sprintf("%s,%s,%s,\"system:masters\"", token, AdminUser, AdminUser)}
	var clusterFlags []string
	if cfg.Cluster != nil {
		more, flags, err := setupCluster(cfg, s, apiPort, caPEM)
		if err != nil {
			return nil, err
		}
		lines, clusterFlags = append(lines, more...), flags
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}

	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	// etcd serves plain HTTP on loopback only; the apiserver is its only client.
	s.Etcd = []string{
		filepath.Join(cfg.BinDir, "etcd"),
		"--name=podarmor",
		"--data-dir=" + etcdData,
		"--listen-client-urls=" + s.EtcdURL,
		"--advertise-client-urls=" + s.EtcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=podarmor=" + peerURL,
		// The data is thrown away with the test; fsync only makes writes slow.
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}

	// kubeadm's kube-apiserver flags for a real cluster, on loopback, minus what needs a
	// kubelet (kubelet client certificates) or the aggregation layer (front-proxy).
	s.APIServer = append([]string{
		filepath.Join(cfg.BinDir, "kube-apiserver"),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--etcd-servers=" + s.EtcdURL,
		"--tls-cert-file=" + f("apiserver.crt"),
		"--tls-private-key-file=" + f("apiserver.key"),
		"--client-ca-file=" + f("ca.crt"),
		"--token-auth-file=" + tokens,
		"--authorization-mode=Node,RBAC",
		// Added to the default plugins, which include MutatingAdmissionWebhook,
		// ValidatingAdmissionWebhook, ServiceAccount and PodSecurity.
		"--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range=" + serviceClusterIPRange,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.pub"),
		"--service-account-signing-key-file=" + f("sa.key"),
		// The apiserver would otherwise publish 127.0.0.1 as the endpoint of the
		// "kubernetes" Service, which endpoint validation rejects as loopback, and log
		// that every 10 seconds. Nothing in the cluster needs that Service.
		// A cluster's node reaches the API server at the address its setup advertises,
		// and clusterFlags switch the reconciler back on.
		"--endpoint-reconciler-type=none",
	}, append(clusterFlags, cfg.APIServerFlags...)...)

	s.Config = &rest.Config{
		Host:            s.APIServerURL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		QPS:             100,
		Burst:           200,
	}
	if err := writeKubeconfigFor(s.Kubeconfig, s.APIServerURL, caPEM, AdminUser, token); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	return s, nil
}

// freePorts returns n distinct loopback TCP ports that were free just now.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Closed only after all are chosen, so that no port is handed out twice.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writePKI writes a CA, a serving certificate it signs for loopback, the in-cluster
// names and extraIPs, and the service-account key pair into dir; it returns the CA
// certificate.
func writePKI(dir string, extraIPs []net.IP) (caPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podarmor-e2e-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}

	servingKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving key: %w", err)
	}
	servingTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(kubernetesServiceIP)}, extraIPs...),
	}
	servingDER, err := x509.CreateCertificate(rand.Reader, servingTmpl, caCert, &servingKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}

	// Service-account tokens are signed with RSA, as kubeadm does.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("service-account key: %w", err)
	}

	caPEM = pemBlock("CERTIFICATE", caDER)
	files := map[string][]byte{
		"ca.crt":        caPEM,
		"apiserver.crt": pemBlock("CERTIFICATE", servingDER),
		"sa.pub":        pemBlock("PUBLIC KEY", saPub),
		"sa.key":        pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)),
	}
	for name, key := range map[string]*ecdsa.PrivateKey{"ca.key": caKey, "apiserver.key": servingKey} {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		files[name] = pemBlock("EC PRIVATE KEY", der)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeKubeconfigFor writes a kubeconfig that reaches server as user, by token.
func writeKubeconfigFor(path, server string, caPEM []byte, user, token string) error {
	const name = "podarmor-e2e"
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: user}
	kc.CurrentContext = name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}
