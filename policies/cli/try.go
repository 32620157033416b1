package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/podarmor/podarmor/e2e/vm"
	"github.com/podarmor/podarmor/enforcer/event"
	"github.com/podarmor/podarmor/enforcer/trial"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// Paths in the VM.
const (
	guestEnforcer = "/usr/local/bin/podarmor-enforcer"
	guestPolicy   = "/podarmor/try/policy.yaml"
	guestMounts   = "/podarmor/try/mounts"
)

// tryFlags are try's options.
type tryFlags struct {
	file       string
	kernel     string
	privileged bool
	unconfined bool
	mounts     []string
	setup      []string
	enforcer   string
	timeout    time.Duration
	memory     int
	verbose    bool
	cluster    clusterFlags
}

func newTry() *cobra.Command {
	var f tryFlags
	cmd := &cobra.Command{
		Use:   "try -f POLICY [--kernel 6.1|6.12] [--privileged] [--unconfined] [--mount SRC:DST]... [--setup CMD]... -- CMD [ARGS...]",
		Short: "run a command in a container confined by a policy inside a throwaway VM",
		Long: `Run CMD in a runc container confined by POLICY (every enforcer it names: BPF LSM,
AppArmor and seccomp), inside a QEMU VM on one of Debian's real kernels, and print CMD's
output, its exit code and the enforcer's events. The exit code of podarmor try is CMD's
(125 when the container could not start).

The container looks like a pod's: a busybox userland, root, its own network namespace
with loopback, a service-account token at /var/run/secrets/kubernetes.io/serviceaccount,
kubelet's /etc/hosts, /etc/hostname and /etc/resolv.conf, /var/run linked to /run, the
default capabilities and masked paths; it is registered with the enforcer by the
podarmor OCI hook before CMD runs.

CMD's output (stdout and stderr together) goes to stdout; podarmor try's report (what
it loaded, the exit code, the events) to stderr. It needs a checkout of podarmor: it
builds the static podarmor-enforcer with hack/build-enforcer.sh (unless
--enforcer-binary names one) and fetches the kernels with hack/vm-kernels.sh.`,
		Example: `  podarmor try -f policy.yaml -- cat /var/run/secrets/kubernetes.io/serviceaccount/token
  podarmor try -f policy.yaml --unconfined -- cat /var/run/secrets/kubernetes.io/serviceaccount/token
  podarmor try -f policy.yaml --privileged --kernel 6.1 -- sh -c 'mount -t tmpfs none /mnt'
  podarmor try -f policy.yaml --mount ./exploit:/exploit -- /exploit`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 {
				return errors.New("put the command after --, as in podarmor try -f POLICY -- CMD ARGS")
			}
			return runTry(cmd, f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "filename", "f", "", "policy file: one ArmorPolicy or ClusterArmorPolicy (- for standard input)")
	fl.StringVar(&f.kernel, "kernel", vm.Series612, "kernel series of the VM: "+strings.Join(vm.Series(), " or "))
	fl.BoolVar(&f.privileged, "privileged", false, "run the container privileged: every capability and device, no masked or read-only paths")
	fl.BoolVar(&f.unconfined, "unconfined", false, "run the same container without the policy, to compare")
	fl.StringArrayVar(&f.mounts, "mount", nil, "SRC:DST[:ro]: copy the file or directory SRC of this machine into the VM and bind it at DST in the container; vm:SRC binds a path of the VM (made by --setup) (repeatable)")
	fl.StringArrayVar(&f.setup, "setup", nil, "shell command to run in the VM, outside the container, before it starts: a listener, a device, a file (repeatable)")
	fl.StringVar(&f.enforcer, "enforcer-binary", "", "a static podarmor-enforcer to use instead of building one (hack/build-enforcer.sh)")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Minute, "kill the VM after this long")
	fl.IntVar(&f.memory, "memory", vm.DefaultMemoryMiB, "memory of the VM in MiB")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "also print the enforcer's log and the VM's timings")
	f.cluster.register(cmd)
	return cmd
}

// report prints podarmor try's own lines.
type report struct{ w io.Writer }

func (r report) printf(format string, args ...any) {
	fmt.Fprintf(r.w, "podarmor try: "+format+"\n", args...)
}

func runTry(cmd *cobra.Command, f tryFlags, command []string) error {
	rep := report{cmd.ErrOrStderr()}
	fail := func(err error) error {
		rep.printf("%v", err)
		return ExitError{Code: trial.ExitNotStarted}
	}
	if !slices.Contains(vm.Series(), f.kernel) {
		return fmt.Errorf("--kernel %q: want %s", f.kernel, strings.Join(vm.Series(), " or "))
	}
	if f.file == "" && !f.unconfined {
		return errors.New("name a policy file with -f (or run --unconfined)")
	}
	opts, err := f.cluster.options()
	if err != nil {
		return err
	}

	nonce := make([]byte, 8)
	rand.Read(nonce)
	prefix := "@@podarmor-try-" + hex.EncodeToString(nonce)
	guestArgs := []string{guestEnforcer, "try-guest", "--report-prefix", prefix}
	var files []vm.File
	var dirs []string

	var enforcers []v1alpha1.Enforcer
	if f.file != "" {
		docs, err := readFile(cmd, f.file)
		if err != nil {
			return err
		}
		if len(docs) != 1 {
			return fmt.Errorf("%s holds %d policies; try takes one", f.file, len(docs))
		}
		d := docs[0]
		res := d.validate(opts)
		if len(res.Errors) > 0 {
			for _, e := range res.Errors {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s: %s\n", d.where, d.policy(), e)
			}
			return ExitError{Code: 1}
		}
		data, err := yamlOf(d)
		if err != nil {
			return err
		}
		files = append(files, vm.File{Path: guestPolicy, Data: data})
		guestArgs = append(guestArgs, "--policy", guestPolicy)
		enforcers = res.Compiled.RuleSet.Enforcers
		if f.unconfined {
			rep.printf("%s: --unconfined: the container runs without it", d.policy())
		} else {
			names := make([]string, len(enforcers))
			for i, e := range enforcers {
				names[i] = string(e)
			}
			rep.printf("%s (profile %s, %s, %s) on kernel %s", d.policy(), res.Compiled.RuleSet.ProfileID,
				res.Compiled.RuleSet.Mode, strings.Join(names, ", "), f.kernel)
		}
	} else {
		rep.printf("no policy, --unconfined, on kernel %s", f.kernel)
	}
	for _, s := range opts.APIServer {
		guestArgs = append(guestArgs, "--apiserver-address", s.String())
	}
	for _, c := range opts.ClusterCIDRs {
		guestArgs = append(guestArgs, "--cluster-cidr", c.String())
	}
	if f.unconfined {
		guestArgs = append(guestArgs, "--unconfined")
	}
	if f.privileged {
		guestArgs = append(guestArgs, "--privileged")
	}
	if f.verbose {
		guestArgs = append(guestArgs, "--verbose")
	}
	for i, m := range f.mounts {
		arg, fs, ds, err := mountFiles(i, m)
		if err != nil {
			return err
		}
		files, dirs = append(files, fs...), append(dirs, ds...)
		guestArgs = append(guestArgs, "--mount", arg)
	}
	for _, s := range f.setup {
		guestArgs = append(guestArgs, "--setup", s)
	}
	guestArgs = append(append(guestArgs, "--"), command...)

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enforcer := f.enforcer
	if enforcer == "" {
		if enforcer, err = buildEnforcer(ctx, cmd.ErrOrStderr()); err != nil {
			return fail(err)
		}
	}
	files = append(files, vm.File{Path: guestEnforcer, Source: enforcer, Mode: 0o755})
	kernel, err := vm.Kernel(ctx, f.kernel)
	if err != nil {
		return fail(err)
	}

	var events []event.Record
	code := -1
	split := &trial.ReportSplitter{
		Prefix: prefix,
		Output: cmd.OutOrStdout(),
		Item: func(it trial.Item) {
			switch it.Kind {
			case trial.KindEvent:
				events = append(events, it.Event)
			case trial.KindExit:
				code = it.Code
			case trial.KindLog:
				fmt.Fprintf(cmd.ErrOrStderr(), "enforcer: %s\n", it.Text)
			default:
				rep.printf("%s", it.Text)
			}
		},
	}
	res, err := vm.Run(ctx, vm.Config{
		Kernel:    kernel,
		Command:   guestArgs,
		Files:     files,
		Dirs:      dirs,
		MemoryMiB: f.memory,
		Timeout:   f.timeout,
		Output:    split,
	})
	split.Flush()
	if f.verbose {
		rep.printf("VM booted in %s (guest clock %s), %s in all", res.Boot.Round(time.Millisecond), res.GuestBoot, res.Elapsed.Round(time.Millisecond))
	}
	if err != nil {
		return fail(err)
	}
	if code < 0 {
		// The runner died without its report; its exit code is all there is.
		code = res.ExitCode
		rep.printf("the runner in the VM exited %d without a report", code)
		return ExitError{Code: code}
	}
	rep.printf("exit code %d", code)
	switch len(events) {
	case 0:
		if !f.unconfined {
			rep.printf("no events")
		}
	case 1:
		rep.printf("1 event:")
	default:
		rep.printf("%d events:", len(events))
	}
	for _, e := range events {
		fmt.Fprintf(cmd.ErrOrStderr(), "  %s\n", e)
	}
	if !f.unconfined && slices.Contains(enforcers, v1alpha1.EnforcerSeccomp) {
		rep.printf("(seccomp refusals leave no event: a denied system call returns EPERM silently)")
	}
	if code != 0 {
		return ExitError{Code: code}
	}
	return nil
}

// yamlOf is the document as the guest reads it again.
func yamlOf(d document) ([]byte, error) {
	var v any = d.ns
	if d.cluster != nil {
		v = d.cluster
	}
	return yaml.Marshal(v)
}

// mountFiles turns --mount number i into the guest's --mount argument and the files
// and directories to copy into the VM.
func mountFiles(i int, spec string) (string, []vm.File, []string, error) {
	rest, inVM := strings.CutPrefix(spec, "vm:")
	src, rest, ok := strings.Cut(rest, ":")
	dst, mode, _ := strings.Cut(rest, ":")
	if !ok || src == "" || !path.IsAbs(dst) || (mode != "" && mode != "ro" && mode != "rw") {
		return "", nil, nil, fmt.Errorf("--mount %q: want SRC:DST or SRC:DST:ro with an absolute DST", spec)
	}
	suffix := ""
	if mode != "" {
		suffix = ":" + mode
	}
	if inVM {
		if !path.IsAbs(src) {
			return "", nil, nil, fmt.Errorf("--mount %q: a vm: path must be absolute", spec)
		}
		return src + ":" + dst + suffix, nil, nil, nil
	}
	guest := fmt.Sprintf("%s/%d", guestMounts, i)
	info, err := os.Stat(src)
	if err != nil {
		return "", nil, nil, fmt.Errorf("--mount %q: %w", spec, err)
	}
	if !info.IsDir() {
		return guest + ":" + dst + suffix, []vm.File{{Path: guest, Source: src}}, nil, nil
	}
	var files []vm.File
	var dirs []string
	err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		g := path.Join(guest, filepath.ToSlash(rel))
		switch {
		case e.IsDir():
			dirs = append(dirs, g)
		case e.Type().IsRegular():
			files = append(files, vm.File{Path: g, Source: p})
		default:
			return fmt.Errorf("%s: only regular files and directories can be copied into the VM", p)
		}
		return nil
	})
	if err != nil {
		return "", nil, nil, fmt.Errorf("--mount %q: %w", spec, err)
	}
	return guest + ":" + dst + suffix, files, dirs, nil
}

// buildEnforcer builds the static podarmor-enforcer with hack/build-enforcer.sh of the
// checkout this command runs in (or was built from) and returns its path.
func buildEnforcer(ctx context.Context, progress io.Writer) (string, error) {
	root, err := checkout()
	if err != nil {
		return "", fmt.Errorf("build podarmor-enforcer: %w (or name a static one with --enforcer-binary)", err)
	}
	var stdout bytes.Buffer
	c := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-enforcer.sh"))
	c.Dir = root
	c.Stdout, c.Stderr = &stdout, progress
	if err := c.Run(); err != nil {
		return "", fmt.Errorf("hack/build-enforcer.sh: %w", err)
	}
	return strings.TrimSpace(stdout.String()), nil
}

// modulePath identifies podarmor's go.mod.
const modulePath = "github.com/podarmor/podarmor"

// checkout finds the repository: up from the working directory, or else up from this
// source file, which a binary built from a checkout still names.
func checkout() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.HasPrefix(data, []byte("module "+modulePath+"\n")) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("not in a checkout of " + modulePath)
}
