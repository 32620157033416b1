// Command controlplane-config lays out a control plane's files exactly as the e2e tests
// do (framework.NewSetup): certificates, the admin token and kubeconfig, and the command
// lines of etcd and kube-apiserver. hack/local-cluster.sh runs it and then starts the
// two command lines as daemons, so the local cluster and the tests run the same flags.
//
//	controlplane-config -dir DIR -bin BINDIR -version v1.37.2 [-- EXTRA-APISERVER-FLAGS...]
//
// It writes DIR/etcd.args and DIR/kube-apiserver.args, one argument per line with the
// binary first, and prints the path of the admin kubeconfig.
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
	flag.Parse()
	cfg.APIServerFlags = flag.Args()

	setup, err := framework.NewSetup(cfg)
	if err != nil {
		return err
	}
	for name, argv := range map[string][]string{"etcd.args": setup.Etcd, "kube-apiserver.args": setup.APIServer} {
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
