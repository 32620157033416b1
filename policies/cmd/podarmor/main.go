// Command podarmor is podarmor's user CLI: the built-in rule catalog, policy validation
// and profile rendering. See `podarmor --help`.
package main

import (
	"os"

	"github.com/podarmor/podarmor/policies/cli"
)

func main() {
	os.Exit(cli.Run(os.Args[1:], os.Stdout, os.Stderr))
}
