// Package cluster reads from a cluster what the policy compiler needs to know about it:
// the addresses $APISERVER and $CLUSTER_CIDRS stand for in policies. The webhook and the
// enforcer both compile policies, and must compile them alike.
package cluster

import (
	"context"
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/compile"
)

// CompileOptions are the compiler's options for a cluster: the built-in catalog and
// backends, the API server's addresses (apiServer, or the kubernetes Service's cluster
// IPs when empty) and clusterCIDRs.
func CompileOptions(ctx context.Context, kube kubernetes.Interface, apiServer, clusterCIDRs []string) (compile.Options, error) {
	cat, err := catalog.Load()
	if err != nil {
		return compile.Options{}, fmt.Errorf("built-in catalog: %w", err)
	}
	backends, err := compile.DefaultBackends()
	if err != nil {
		return compile.Options{}, err
	}
	o := compile.Options{Catalog: cat, Backends: backends}
	addrs := apiServer
	if len(addrs) == 0 {
		svc, err := kube.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return o, fmt.Errorf("read the kubernetes Service for $APISERVER (or configure the API server addresses): %w", err)
		}
		addrs = svc.Spec.ClusterIPs
	}
	return WithAddresses(o, addrs, clusterCIDRs)
}

// WithAddresses parses what $APISERVER (addresses) and $CLUSTER_CIDRS (addresses or
// CIDRs) stand for into o.
func WithAddresses(o compile.Options, apiServer, clusterCIDRs []string) (compile.Options, error) {
	for _, s := range apiServer {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return o, fmt.Errorf("API server address %q: %w", s, err)
		}
		o.APIServer = append(o.APIServer, a)
	}
	for _, s := range clusterCIDRs {
		p, err := compile.ParseAddress(s)
		if err != nil {
			return o, fmt.Errorf("cluster CIDR %q: %w", s, err)
		}
		o.ClusterCIDRs = append(o.ClusterCIDRs, p)
	}
	return o, nil
}
