package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newValidate() *cobra.Command {
	var file string
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "validate -f POLICY",
		Short: "check policies as the admission webhook does, naming the field of every error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := cf.options()
			if err != nil {
				return err
			}
			docs, err := readFile(cmd, file)
			if err != nil {
				return err
			}
			failed := false
			for _, d := range docs {
				res := d.validate(opts)
				for _, w := range res.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: warning: %s\n", d.where, d.policy(), w)
				}
				if len(res.Errors) > 0 {
					failed = true
					for _, e := range res.Errors {
						fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: %s\n", d.where, d.policy(), e)
					}
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s: valid (profile %s)\n", d.where, d.policy(), d.policy().ProfileID())
			}
			if failed {
				return ExitError{Code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "policy file (YAML or JSON, several documents allowed; - for standard input)")
	cf.register(cmd)
	return cmd
}
