// Command controlplane-config lays out a control plane's files exactly as the e2e tests
// do (framework.NewSetup): certificates, the admin token and kubeconfig, and the command
// lines of etcd and kube-apiserver. hack/local-cluster.sh runs it and then starts the
// two command lines as daemons, so the local cluster and the tests run the same flags.
//
//	controlplane-config -dir DIR -bin BINDIR -version v1.37.2 [-node NAME -advertise-address IP] [-- EXTRA-APISERVER-FLAGS...]
//
// It writes DIR/etcd.args and DIR/kube-apiserver.args, one argument per line with the
// binary first, and prints the path of the admin kubeconfig. With -node it lays out a
// cluster with that node (framework.ClusterConfig): it also writes
// DIR/kube-scheduler.args and DIR/kube-controller-manager.args, and the node's files
// under DIR/node.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/podarmor/podarmor/e2e/framework"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane-config:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg framework.SetupConfig
	flag.StringVar(&cfg.Dir, "dir", "", "directory for the control plane's files (required)")
	flag.StringVar(&cfg.BinDir, "bin", "", "directory holding etcd and kube-apiserver (required)")
	flag.StringVar(&cfg.Version, "version", "", "Kubernetes release of the binaries, e.g. v1.37.2 (required)")
	var cluster framework.ClusterConfig
	flag.StringVar(&cluster.NodeName, "node", "", "lay out a cluster with a node of this name")
	flag.StringVar(&cluster.AdvertiseAddress, "advertise-address", "", "with -node: the IPv4 address at which the node reaches the API server")
	flag.Parse()
	cfg.APIServerFlags = flag.Args()
	if cluster.NodeName != "" || cluster.AdvertiseAddress != "" {
		cfg.Cluster = &cluster
	}

	setup, err := framework.NewSetup(cfg)
	if err != nil {
		return err
	}
	args := map[string][]string{"etcd.args": setup.Etcd, "kube-apiserver.args": setup.APIServer}
	if c := setup.Cluster; c != nil {
		args["kube-scheduler.args"] = c.Scheduler
		args["kube-controller-manager.args"] = c.ControllerManager
	}
	for name, argv := range args {
		for _, a := range argv {
			if strings.Contains(a, "\n") {
				return fmt.Errorf("argument %q of %s holds a newline", a, name)
			}
		}
		data := strings.Join(argv, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	fmt.Println(setup.Kubeconfig)
	return nil
}
