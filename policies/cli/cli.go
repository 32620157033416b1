// Package cli implements the podarmor command: the built-in rule catalog, policy
// validation and profile rendering, all offline, and `try`, which runs a command under a
// policy in a VM (e2e/vm) with the node enforcer. Its main package only calls Run.
package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/spf13/cobra"

	"github.com/podarmor/podarmor/policies/compile"
)

// ExitError carries a process exit code. Commands that have already printed their
// errors return one so that Run does not print them again.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run runs the podarmor command with args and returns the process exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	cmd := newRoot(stdout, stderr)
	cmd.SetArgs(args)
	err := cmd.Execute()
	var exit ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	default:
		fmt.Fprintln(stderr, "podarmor:", err)
		return 1
	}
}

// clusterFlags are the cluster facts that built-in rules with placeholders need.
type clusterFlags struct {
	apiServer    []string
	clusterCIDRs []string
}

func (f *clusterFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringSliceVar(&f.apiServer, "apiserver-address", nil,
		"address of the cluster's kubernetes Service, for rules that use $APISERVER (repeatable)")
	cmd.Flags().StringSliceVar(&f.clusterCIDRs, "cluster-cidr", nil,
		"pod or service CIDR of the cluster, for rules that use $CLUSTER_CIDRS (repeatable)")
}

func (f *clusterFlags) options() (compile.Options, error) {
	var o compile.Options
	for _, s := range f.apiServer {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return o, fmt.Errorf("--apiserver-address %q: %w", s, err)
		}
		o.APIServer = append(o.APIServer, a)
	}
	for _, s := range f.clusterCIDRs {
		p, err := compile.ParseAddress(s)
		if err != nil {
			return o, fmt.Errorf("--cluster-cidr %q: %w", s, err)
		}
		o.ClusterCIDRs = append(o.ClusterCIDRs, p)
	}
	return o, nil
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "podarmor",
		Short: "podarmor confines Kubernetes containers with BPF LSM, AppArmor and seccomp",
		Long: `podarmor confines Kubernetes containers with BPF LSM, AppArmor and seccomp.

It lists the built-in rules, validates policies and shows the profiles a policy compiles
to, all offline; try runs a command under a policy in a throwaway VM on a real kernel.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRules(), newValidate(), newRender(), newTry())
	return root
}

// readFile reads a policy file, "-" being standard input.
func readFile(cmd *cobra.Command, name string) ([]document, error) {
	if name == "" {
		return nil, errors.New("name a policy file with -f")
	}
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(cmd.InOrStdin())
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return readPolicies(name, data)
}
