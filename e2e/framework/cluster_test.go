package framework

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
)

// A cluster setup, checked without starting anything: the node's files name the
// advertised address, every identity has its token, and the API server is told where
// the node is and how to reach the cluster network.
func TestNewSetupCluster(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSetup(SetupConfig{Dir: dir, BinDir: "/bin/dir", Version: "v1.37.2",
		Cluster: &ClusterConfig{NodeName: "node-1", AdvertiseAddress: "10.0.2.100"}})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Cluster
	if c == nil {
		t.Fatal("Setup.Cluster is nil")
	}
	port := s.APIServerURL[strings.LastIndex(s.APIServerURL, ":")+1:]
	if want := "10.0.2.100:" + port; c.APIServerAddress != want {
		t.Errorf("APIServerAddress %s, want %s (the API server's own port)", c.APIServerAddress, want)
	}
	for _, flag := range []string{
		"--advertise-address=10.0.2.100",
		"--egress-selector-config-file=" + filepath.Join(dir, "egress-selector.yaml"),
	} {
		if !slices.Contains(s.APIServer, flag) {
			t.Errorf("kube-apiserver lacks %s: %q", flag, s.APIServer)
		}
	}
	// The last --endpoint-reconciler-type wins: the cluster's.
	var reconciler string
	for _, a := range s.APIServer {
		if v, ok := strings.CutPrefix(a, "--endpoint-reconciler-type="); ok {
			reconciler = v
		}
	}
	if reconciler != "lease" {
		t.Errorf("endpoint reconciler %q, want lease so the kubernetes Service has the advertised endpoint", reconciler)
	}
	// The API server's client certificate for the kubelet: the cluster CA's, in
	// system:masters.
	kcPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "apiserver-kubelet-client.crt"))
	caPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	kb, _ := pem.Decode(kcPEM)
	cb, _ := pem.Decode(caPEM)
	if kb == nil || cb == nil {
		t.Fatal("apiserver-kubelet-client.crt or ca.crt is not PEM")
	}
	kc, err := x509.ParseCertificate(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(cb.Bytes)
	if err := kc.CheckSignatureFrom(ca); err != nil || !slices.Contains(kc.Subject.Organization, "system:masters") ||
		!slices.Contains(kc.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("kubelet client certificate: signature %v, subject %v, usages %v", err, kc.Subject, kc.ExtKeyUsage)
	}
	if !slices.Contains(s.APIServer, "--kubelet-client-certificate="+filepath.Join(dir, "pki", "apiserver-kubelet-client.crt")) {
		t.Errorf("kube-apiserver lacks --kubelet-client-certificate: %q", s.APIServer)
	}
	egress, err := os.ReadFile(filepath.Join(dir, "egress-selector.yaml"))
	if err != nil || !strings.Contains(string(egress), "udsName: "+c.EgressSocket) || !strings.Contains(string(egress), "proxyProtocol: HTTPConnect") {
		t.Errorf("egress-selector.yaml: %v\n%s", err, egress)
	}

	// The serving certificate names the advertised address.
	certPEM, _ := os.ReadFile(filepath.Join(dir, "pki", "apiserver.crt"))
	b, _ := pem.Decode(certPEM)
	if b == nil {
		t.Fatal("apiserver.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(cert.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.0.2.100")) }) {
		t.Errorf("serving certificate IPs %v lack 10.0.2.100", cert.IPAddresses)
	}

	tokens, _ := os.ReadFile(filepath.Join(dir, "tokens.csv"))
	for _, tc := range []struct{ kubeconfig, user string }{
		{filepath.Join(dir, "scheduler.kubeconfig"), "system:kube-scheduler"},
		{filepath.Join(dir, "controller-manager.kubeconfig"), "system:kube-controller-manager"},
		{filepath.Join(c.NodeDir, "kubelet.kubeconfig"), "system:node:node-1"},
		{filepath.Join(c.NodeDir, "kube-proxy.kubeconfig"), "system:kube-proxy"},
	} {
		cfg, err := clientcmd.BuildConfigFromFlags("", tc.kubeconfig)
		if err != nil {
			t.Errorf("%s: %v", tc.kubeconfig, err)
			continue
		}
		wantHost := s.APIServerURL
		if strings.HasPrefix(tc.kubeconfig, c.NodeDir) {
			wantHost = "https://" + c.APIServerAddress
		}
		if cfg.Host != wantHost {
			t.Errorf("%s: host %s, want %s", filepath.Base(tc.kubeconfig), cfg.Host, wantHost)
		}
		if !strings.Contains(string(tokens), cfg.BearerToken+","+tc.user+",") {
			t.Errorf("tokens.csv has no line for %s with the kubeconfig's token", tc.user)
		}
	}
	if !strings.Contains(string(tokens), `system:node:node-1,system:node:node-1,"system:nodes"`) {
		t.Errorf("the kubelet's token line lacks group system:nodes, which the Node authorizer needs:\n%s", tokens)
	}
	env, _ := os.ReadFile(filepath.Join(c.NodeDir, "node.env"))
	for _, want := range []string{"NODE_NAME=node-1\n", "APISERVER=" + c.APIServerAddress + "\n", "CLUSTER_CIDR=" + ClusterCIDR + "\n"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("node.env lacks %q:\n%s", want, env)
		}
	}
	if c.Scheduler[0] != "/bin/dir/kube-scheduler" || c.ControllerManager[0] != "/bin/dir/kube-controller-manager" {
		t.Errorf("binaries: %s, %s", c.Scheduler[0], c.ControllerManager[0])
	}
	if !slices.Contains(c.ControllerManager, "--cluster-cidr="+ClusterCIDR) {
		t.Errorf("controller-manager does not allocate node CIDRs from %s: %q", ClusterCIDR, c.ControllerManager)
	}
}

func TestNewSetupClusterInvalid(t *testing.T) {
	for name, c := range map[string]ClusterConfig{
		"no node name":          {AdvertiseAddress: "10.0.2.100"},
		"loopback address":      {NodeName: "n", AdvertiseAddress: "127.0.0.1"},
		"not an address":        {NodeName: "n", AdvertiseAddress: "node.local"},
		"IPv6 is not supported": {NodeName: "n", AdvertiseAddress: "fd00::1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewSetup(SetupConfig{Dir: t.TempDir(), BinDir: "/b", Version: "v1.37.2", Cluster: &c})
			if err == nil || !strings.Contains(err.Error(), "Cluster.") {
				t.Errorf("got %v, want an error naming the Cluster field", err)
			}
		})
	}
}
