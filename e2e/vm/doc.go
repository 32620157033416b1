// Package vm runs commands and Go tests inside QEMU VMs on Debian's real kernels, 6.1
// (bookworm) and 6.12 (trixie), booted with AppArmor and BPF LSM active, and reports
// their output and exit code to the host. The machines we build on cannot load BPF LSM
// programs or AppArmor profiles in their own kernel; this is where the enforcers are
// proven, where `podarmor try` runs its containers and where VM benchmarks run.
//
// # Running a command
//
//	kernel, err := vm.Kernel(ctx, vm.Series612)
//	res, err := vm.Run(ctx, vm.Config{
//		Kernel:  kernel,
//		Command: []string{"sh", "-c", "cat /sys/kernel/security/lsm"},
//		Files:   []vm.File{{Path: "/podarmor/profile", Source: "testdata/profile"}},
//	})
//	// res.ExitCode, res.Output; err only when the VM could not run the command to its end
//
// In a test, [RunTest] does the same for a *testing.T: it skips where QEMU is missing
// (fails under CI=true) and under -short, streams the output into the test log and fails
// the test with the end of the console when the VM dies.
//
// # Writing a guest test
//
// Tests that must run in the guest go into files with the build tag vmguest:
//
//	//go:build vmguest
//
//	package mypkg
//
//	func TestInTheKernel(t *testing.T) { ... } // runs as root in the VM
//
// The host's `go test ./...` never compiles these files, so they are never skipped
// there. A host test in the same package (or any other) boots them, once per kernel:
//
//	func TestInVM(t *testing.T) {
//		for _, series := range vm.Series() {
//			t.Run(series, func(t *testing.T) {
//				t.Parallel()
//				vm.RunGoTest(t, series, vm.GoTest{Package: ".", Args: []string{"-test.run=TestInTheKernel"}})
//			})
//		}
//	}
//
// [RunGoTest] builds the package with `go test -c -tags vmguest` (CGO_ENABLED=0 unless
// GoTest.BuildEnv says otherwise; a cgo binary, static or not, works too: shared
// libraries are copied along), copies the package's testdata next to it, runs it with
// -test.v in the guest's copy of the package directory, streams its output into the
// host test's log, and fails the host test unless it exits 0. Build once and boot both
// kernels from one binary with [BuildGoTest] and GoTest.Binary. internal/guest is an
// example of a guest test package; vm_test.go boots it.
//
// # The guest
//
// The VM has no disk and, unless Config.Forwards asks for one, no network device (see
// "Reaching the host" below). Its root is an initramfs: busybox (every
// applet), runc, apparmor_parser, aa-exec and aa-status from the host's Debian packages
// with their libraries, apparmor_parser's configuration and includes, and the caller's
// files over them. /init (init.sh) mounts proc, sysfs, securityfs, tracefs, devtmpfs,
// bpffs (/sys/fs/bpf), cgroup2 (/sys/fs/cgroup), devpts and tmpfs on /tmp, /run and
// /dev/shm, brings up loopback, sets the hostname podarmor-vm, runs the command as its
// child with stdin from /dev/null, and powers off. The kernel command line is
// "console=ttyS0 quiet panic=-1 lsm=landlock,lockdown,yama,apparmor,bpf
// cryptomgr.notests" and QEMU runs with -no-reboot, so a kernel panic ends the VM at
// once. No kernel modules are available but the network device's, and those only in a
// VM with forwards (overlayfs, for one, is a module in Debian's kernels); everything
// else the tests need is built in. The root is the initramfs, on which pivot_root
// fails: run containers with `runc run --no-pivot`.
//
// # Reaching the host
//
// A guest that must talk to something the test runs on the host, such as a
// kube-apiserver from e2e/framework on 127.0.0.1, gets it through Config.Forwards (or
// GoTest.Forwards):
//
//	vm.RunGoTest(t, series, vm.GoTest{
//		Package:  ".",
//		Forwards: []vm.Forward{{GuestAddr: vm.ForwardIP + ":6443", Host: apiserverAddr}},
//		Args:     []string{"-apiserver=https://" + vm.ForwardIP + ":6443"},
//	})
//
// The VM then has a virtio NIC on QEMU's user-mode network (10.0.2.0/24) with
// restrict=on, so the guest reaches nothing outside: not QEMU's gateway 10.0.2.2 (which
// otherwise leads to the host's loopback), not its DNS server, nothing beyond (there
// is no default route). Each forward is a guestfwd rule: a connection the guest opens
// to GuestAddr is handed to `busybox nc` on the host, which connects to a relay that
// Run keeps on 127.0.0.1 for the forward, which connects to Host. Every guest
// connection gets a host connection of its own, and Run ends them all when the VM has
// exited. /init loads the NIC's modules (virtio_net and what it depends on, and
// virtio_pci on 6.1, where it is a module; hack/vm-kernels.sh keeps them beside the
// kernel) and gives eth0 the address GuestIP/24, before the command starts: about 0.2 s
// more of the guest's boot, by its instruction-counting clock (Bench).
//
// A TLS server on the host is reached at an address its certificate does not name:
// verify it against a name it does (a kubeconfig's tls-server-name, e.g. "localhost"
// for e2e/framework's kube-apiserver).
//
// # Long-running machines
//
// [StartMachine] boots a disk image with the image's own kernel and initramfs instead
// (the local cluster's node, e2e/node, docs/local-cluster.md) and returns while it runs:
// a qcow2 or raw root disk on virtio, the console appended to a file, host directories
// shared over 9p (MachineConfig.Shares), Forwards as above, HostForwards from ports of
// the host's loopback to ports of the guest (QEMU's hostfwd, which restrict=on allows),
// and QEMU's monitor on a unix socket, through which [Machine.Shutdown] presses the
// guest's power button before it kills QEMU after a timeout. Its vCPUs share one TCG
// thread (see Config.CPUs). [ServeRelay] relays a listener, e.g. a unix socket, to a
// host forward's port.
//
// # How it is fast and exact
//
//   - hack/vm-kernels.sh fetches each kernel package once and takes the kernel's ELF
//     (vmlinux) out of the bzImage. QEMU boots the ELF directly through its PVH entry,
//     which skips the real-mode setup and the kernel decompressing itself: 3-5 s of
//     every boot under TCG (xz on 6.1).
//   - The initramfs is not compressed: gunzipping it under TCG took about a second of
//     each boot, far more than writing and loading 15 MB more. It is built fresh for
//     every boot (tens of milliseconds).
//   - The command's stdout and stderr go to a second serial port (ttyS1) that the host
//     reads apart from the console (ttyS0), so Result.Output is byte for byte what the
//     command wrote, with no kernel message mixed in. Markers carrying a random nonce of
//     each boot report the start and the exit code; before powering off, /init waits
//     until both ports have drained (stty's TCSETSW), so no line is lost.
//   - One vCPU by default (Config.CPUs). QEMU 7.2's multi-threaded TCG corrupts a
//     2-vCPU guest that patches its own kernel text while both vCPUs run: toggling
//     static keys (attaching BPF programs, enabling tracepoints) ended in
//     "Oops: int3" and a panic in every one of three tries on 6.12, and hung 6.1
//     once. With one vCPU the same stress passes. Two single-vCPU VMs in parallel
//     subtests use both cores of the machine.
//   - Config.Bench runs the deterministic mode of benchmarks: single-threaded TCG with
//     -icount shift=0,sleep=off, where the guest clock counts instructions.
package vm
