package framework

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The pod network of a cluster with a node: controller-manager hands each node a /24 of
// ClusterCIDR (the first node gets 10.244.0.0/24), which the node's CNI configuration
// and kube-proxy's clusterCIDR must agree with.
const (
	ClusterCIDR    = "10.244.0.0/16"
	nodeCIDRMask   = "24"
	ServiceCIDR    = serviceClusterIPRange
	clusterDomain  = "cluster.local"
	NodeConfigDir  = "node"
	egressSockName = "egress.sock"
)

// ClusterConfig, in SetupConfig, lays out a control plane for a cluster with one node
// that is not on the host's loopback (the local cluster's VM): kube-scheduler and
// kube-controller-manager command lines, the node's credentials, and the API server's
// side of the two network paths between host and node.
//
//   - Node to API server: the node reaches the API server at AdvertiseAddress and the
//     API server's port (the VM forwards that address to the host's loopback). The API
//     server advertises that address as the `kubernetes` Service's endpoint, so pods
//     reach it through the Service too, and its certificate names it.
//   - API server to node (kubectl exec and logs, webhooks served by pods): its egress
//     selector sends all "cluster" traffic as HTTP CONNECT requests to a unix socket,
//     Setup.EgressSocket, which the caller connects to a proxy on the node.
type ClusterConfig struct {
	// NodeName is the node's name; its kubelet authenticates as system:node:NodeName.
	// Required.
	NodeName string
	// AdvertiseAddress is the IPv4 address at which the node reaches the API server,
	// e.g. "10.0.2.100" (e2e/vm.ForwardIP). Required.
	AdvertiseAddress string
}

func (c *ClusterConfig) validate() error {
	if c.NodeName == "" {
		return errors.New("setup: Cluster.NodeName is required")
	}
	a, err := netip.ParseAddr(c.AdvertiseAddress)
	if err != nil || !a.Is4() || a.IsLoopback() {
		return fmt.Errorf("setup: Cluster.AdvertiseAddress %q is not a non-loopback IPv4 address", c.AdvertiseAddress)
	}
	return nil
}

// ClusterSetup is what ClusterConfig adds to a Setup.
type ClusterSetup struct {
	// Scheduler and ControllerManager are the command lines, binary first; they run on
	// the host and reach the API server on loopback.
	Scheduler, ControllerManager []string
	// EgressSocket is the unix socket the API server sends its traffic to the cluster
	// network to, as HTTP CONNECT requests.
	EgressSocket string
	// NodeDir is the directory to hand to the node, read-only: kubelet.kubeconfig,
	// kube-proxy.kubeconfig, ca.crt and node.env (see writeNodeEnv).
	NodeDir string
	// APIServerAddress is where the node reaches the API server: "ADDRESS:PORT", the
	// port being the API server's own on the host.
	APIServerAddress string
}

// clusterIdentities are the users besides the admin that a cluster's token file
// authenticates; the default RBAC policy of every release binds the system: names.
type clusterIdentity struct {
	file   string // kubeconfig file name
	user   string
	groups string
	onNode bool // the kubeconfig goes to the node and names AdvertiseAddress
}

func clusterIdentities(node string) []clusterIdentity {
	return []clusterIdentity{
		{file: "scheduler.kubeconfig", user: "system:kube-scheduler"},
		{file: "controller-manager.kubeconfig", user: "system:kube-controller-manager"},
		{file: "kubelet.kubeconfig", user: "system:node:" + node, groups: "system:nodes", onNode: true},
		{file: "kube-proxy.kubeconfig", user: "system:kube-proxy", onNode: true},
	}
}

// setupCluster writes the cluster's files and returns its additions; apiPort is the API
// server's port and caPEM its CA. It returns the token file lines of the cluster's
// identities and the flags the API server needs on top of NewSetup's.
func setupCluster(cfg SetupConfig, s *Setup, apiPort int, caPEM []byte) (tokenLines []string, apiFlags []string, err error) {
	c := cfg.Cluster
	pki := filepath.Join(cfg.Dir, "pki")
	nodeDir := filepath.Join(cfg.Dir, NodeConfigDir)
	if err := os.MkdirAll(nodeDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	cs := &ClusterSetup{
		EgressSocket:     filepath.Join(cfg.Dir, egressSockName),
		NodeDir:          nodeDir,
		APIServerAddress: c.AdvertiseAddress + ":" + strconv.Itoa(apiPort),
	}
	s.Cluster = cs

	kubeconfigs := map[string]string{}
	for _, id := range clusterIdentities(c.NodeName) {
		token, err := randomHex(32)
		if err != nil {
			return nil, nil, fmt.Errorf("setup: %w", err)
		}
		tokenLines = append(tokenLines, fmt.Sprintf("%s,%s,%s,%q", token, id.user, id.user, id.groups))
		server, path := s.APIServerURL, filepath.Join(cfg.Dir, id.file)
		if id.onNode {
			server, path = "https://"+cs.APIServerAddress, filepath.Join(nodeDir, id.file)
		}
		if err := writeKubeconfigFor(path, server, caPEM, id.user, token); err != nil {
			return nil, nil, fmt.Errorf("setup: %w", err)
		}
		kubeconfigs[id.file] = path
	}
	if err := os.WriteFile(filepath.Join(nodeDir, "ca.crt"), caPEM, 0o644); err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	if err := writeNodeEnv(filepath.Join(nodeDir, "node.env"), c, cs.APIServerAddress); err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}

	egress := filepath.Join(cfg.Dir, "egress-selector.yaml")
	// Only the cluster network goes through the node's proxy; etcd and the API server's
	// calls to itself stay direct.
	egressConfig := `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: ` + cs.EgressSocket + "\n"
	if err := os.WriteFile(egress, []byte(egressConfig), 0o600); err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	// The kubelet authenticates the API server's calls (exec, logs, port-forward) by a
	// client certificate of the cluster CA, and asks the API server whether that user may;
	// as kubeadm's apiserver-kubelet-client, it is in system:masters.
	if err := writeClientCert(pki, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return nil, nil, fmt.Errorf("setup: %w", err)
	}
	apiFlags = []string{
		"--kubelet-client-certificate=" + filepath.Join(pki, "apiserver-kubelet-client.crt"),
		"--kubelet-client-key=" + filepath.Join(pki, "apiserver-kubelet-client.key"),
		// The node's InternalIP first: the node's name resolves only on the node (its
		// /etc/hosts), and the API server checks that it resolves on the host before it
		// proxies to a node (nodes/NAME/proxy).
		"--kubelet-preferred-address-types=InternalIP,Hostname",
		"--advertise-address=" + c.AdvertiseAddress,
		"--endpoint-reconciler-type=lease",
		"--egress-selector-config-file=" + egress,
	}

	ports, err := freePorts(2)
	if err != nil {
		return nil, nil, fmt.Errorf("setup: pick ports: %w", err)
	}
	f := func(name string) string { return filepath.Join(pki, name) }
	sched := kubeconfigs["scheduler.kubeconfig"]
	cs.Scheduler = []string{
		filepath.Join(cfg.BinDir, "kube-scheduler"),
		"--kubeconfig=" + sched,
		"--authentication-kubeconfig=" + sched,
		"--authorization-kubeconfig=" + sched,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--leader-elect=false",
	}
	cm := kubeconfigs["controller-manager.kubeconfig"]
	cs.ControllerManager = []string{
		filepath.Join(cfg.BinDir, "kube-controller-manager"),
		"--kubeconfig=" + cm,
		"--authentication-kubeconfig=" + cm,
		"--authorization-kubeconfig=" + cm,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[1]),
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + f("sa.key"),
		"--root-ca-file=" + f("ca.crt"),
		"--cluster-signing-cert-file=" + f("ca.crt"),
		"--cluster-signing-key-file=" + f("ca.key"),
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + ClusterCIDR,
		"--node-cidr-mask-size=" + nodeCIDRMask,
		"--service-cluster-ip-range=" + ServiceCIDR,
		"--controllers=*,bootstrapsigner,tokencleaner",
	}
	return tokenLines, apiFlags, nil
}

// writeClientCert writes NAME.crt and NAME.key into pki, a client certificate for user
// cn in group org signed by the CA that writePKI left there.
func writeClientCert(pki, name, cn, org string) error {
	caCert, caKey, err := readCA(pki)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("%s key: %w", name, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{org}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("%s certificate: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pki, name+".crt"), pemBlock("CERTIFICATE", der), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(pki, name+".key"), pemBlock("EC PRIVATE KEY", keyDER), 0o600)
}

// readCA reads the CA certificate and key writePKI wrote into pki.
func readCA(pki string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(pki, "ca.key"))
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s: ca.crt or ca.key is not PEM", pki)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("ca.crt: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("ca.key: %w", err)
	}
	return cert, key, nil
}

// writeNodeEnv writes the node's settings as shell-style KEY=VALUE lines, which the
// node's boot scripts source.
func writeNodeEnv(path string, c *ClusterConfig, apiServer string) error {
	vars := [][2]string{
		{"NODE_NAME", c.NodeName},
		{"APISERVER", apiServer},
		{"CLUSTER_CIDR", ClusterCIDR},
		{"SERVICE_CIDR", ServiceCIDR},
		{"CLUSTER_DOMAIN", clusterDomain},
	}
	var b strings.Builder
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v[0], v[1])
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
