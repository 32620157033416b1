package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/compile"
	"github.com/podarmor/podarmor/policies/compile/apparmor"
	"github.com/podarmor/podarmor/policies/compile/seccomp"
)

func newRender() *cobra.Command {
	var file, enforcer, outDir string
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "render -f POLICY [--enforcer apparmor|seccomp|bpf] [-d DIR]",
		Short: "print (or write) the profiles that policies compile to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := cf.options()
			if err != nil {
				return err
			}
			only, err := parseEnforcer(enforcer)
			if err != nil {
				return err
			}
			docs, err := readFile(cmd, file)
			if err != nil {
				return err
			}
			var out []rendered
			failed := false
			for _, d := range docs {
				res := d.validate(opts)
				if len(res.Errors) > 0 {
					failed = true
					for _, e := range res.Errors {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: %s\n", d.where, d.policy(), e)
					}
					continue
				}
				for _, p := range res.Compiled.Profiles {
					if only != "" && p.Enforcer != only {
						continue
					}
					for _, u := range p.Unsupported {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: %s leaves rule %s to other enforcers: %s\n",
							d.where, d.policy(), p.Enforcer, u.RuleID, u.Reason)
					}
					out = append(out, rendered{doc: d, id: res.Compiled.RuleSet.ProfileID, mode: res.Compiled.RuleSet.Mode, Profile: p})
				}
				if only != "" && !slices.Contains(d.policy().Spec.Enforcers, only) {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: does not use the %s enforcer\n", d.where, d.policy(), only)
				}
			}
			if failed {
				return ExitError{Code: 1}
			}
			if outDir != "" {
				return writeProfiles(cmd, outDir, out)
			}
			for _, r := range out {
				if len(out) > 1 {
					fmt.Fprintf(cmd.OutOrStdout(), "==> %s %s: %s <==\n", r.doc.where, r.Enforcer, r.name())
				}
				if r.Content == nil {
					fmt.Fprintf(cmd.OutOrStdout(), "# %s\n", r.none())
					continue
				}
				cmd.OutOrStdout().Write(r.Content)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "policy file (YAML or JSON, several documents allowed; - for standard input)")
	cmd.Flags().StringVar(&enforcer, "enforcer", "", "only this enforcer's profile: apparmor, seccomp or bpf")
	cmd.Flags().StringVarP(&outDir, "output-dir", "d", "", "write the profiles as files under this directory (apparmor/, seccomp/podarmor/, bpf/) instead of printing them")
	cf.register(cmd)
	return cmd
}

// rendered is one profile of one policy.
type rendered struct {
	compile.Profile
	doc  document
	id   string
	mode v1alpha1.Mode
}

// name is the profile's name on a node.
func (r rendered) name() string {
	switch r.Enforcer {
	case v1alpha1.EnforcerAppArmor:
		return apparmor.ProfileName(r.id)
	case v1alpha1.EnforcerSeccomp:
		return seccomp.FileName(r.id)
	}
	return r.id
}

// none says why an enforcer has no profile file.
func (r rendered) none() string {
	if r.mode == v1alpha1.ModeRuntimeDefault {
		return fmt.Sprintf("%s: mode RuntimeDefault uses the container runtime's own profile (seccompProfile type RuntimeDefault); no file", r.Enforcer)
	}
	return fmt.Sprintf("%s: mode %s confines nothing with %s; no file", r.Enforcer, r.mode, r.Enforcer)
}

// path is where -d writes the profile, relative to the output directory.
func (r rendered) path() string {
	switch r.Enforcer {
	case v1alpha1.EnforcerAppArmor:
		return filepath.Join("apparmor", r.name())
	case v1alpha1.EnforcerSeccomp:
		return filepath.Join("seccomp", r.name())
	}
	return filepath.Join("bpf", r.id+".json")
}

func writeProfiles(cmd *cobra.Command, dir string, out []rendered) error {
	for _, r := range out {
		if r.Content == nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", r.doc.where, r.none())
			continue
		}
		path := filepath.Join(dir, r.path())
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("write profile: %w", err)
		}
		if err := os.WriteFile(path, r.Content, 0o644); err != nil {
			return fmt.Errorf("write profile: %w", err)
		}
		fmt.Fprintln(cmd.OutOrStdout(), path)
	}
	return nil
}

func parseEnforcer(s string) (v1alpha1.Enforcer, error) {
	if s == "" {
		return "", nil
	}
	for _, e := range v1alpha1.Enforcers {
		if strings.EqualFold(s, string(e)) {
			return e, nil
		}
	}
	return "", fmt.Errorf("--enforcer %q: want apparmor, seccomp or bpf", s)
}
