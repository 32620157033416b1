package vm

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// machineFiles makes the kernel, initrd and disk files a MachineConfig needs to exist.
func machineFiles(t *testing.T) MachineConfig {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd.img", "disk.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return MachineConfig{
		Kernel:  filepath.Join(dir, "vmlinux"),
		Initrd:  filepath.Join(dir, "initrd.img"),
		Disk:    filepath.Join(dir, "disk.qcow2"),
		Console: filepath.Join(dir, "console.log"),
		Monitor: filepath.Join(dir, "qmp.sock"),
		Shares:  []Share{{Tag: "podarmor-node", Dir: dir, ReadOnly: true}, {Tag: "logs", Dir: dir}},
	}
}

// TestMachineConfigErrors checks that a bad MachineConfig is refused with an error
// naming what is wrong.
func TestMachineConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(*MachineConfig)
		want   string
	}{
		"no kernel":         {func(c *MachineConfig) { c.Kernel = "" }, "no kernel"},
		"missing disk":      {func(c *MachineConfig) { c.Disk += ".gone" }, "disk"},
		"no monitor":        {func(c *MachineConfig) { c.Monitor = "" }, "monitor"},
		"disk format":       {func(c *MachineConfig) { c.DiskFormat = "vmdk" }, `"vmdk"`},
		"host fwd not lo":   {func(c *MachineConfig) { c.HostForwards = []HostForward{{Host: "0.0.0.0:80", GuestPort: 80}} }, `"0.0.0.0:80"`},
		"host fwd port":     {func(c *MachineConfig) { c.HostForwards = []HostForward{{Host: "127.0.0.1:80", GuestPort: 0}} }, "guest port 0"},
		"host fwd twice":    {func(c *MachineConfig) { c.HostForwards = []HostForward{{"127.0.0.1:80", 1}, {"127.0.0.1:80", 2}} }, "two host forwards"},
		"share tag":         {func(c *MachineConfig) { c.Shares[0].Tag = "a tag" }, `"a tag"`},
		"share tag twice":   {func(c *MachineConfig) { c.Shares[1].Tag = c.Shares[0].Tag }, `"podarmor-node"`},
		"share not a dir":   {func(c *MachineConfig) { c.Shares[0].Dir = c.Kernel }, "not a directory"},
		"forward on the gw": {func(c *MachineConfig) { c.Forwards = []Forward{{GuestAddr: "10.0.2.2:80", Host: "127.0.0.1:80"}} }, "gateway"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := machineFiles(t)
			tc.change(&cfg)
			err := cfg.defaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestMachineArgs checks QEMU's command line of a machine: the disk on virtio, the
// console file, the monitor, one TCG thread for all vCPUs, the 9p shares and the
// hostfwd rules beside the guestfwd ones.
func TestMachineArgs(t *testing.T) {
	cfg := machineFiles(t)
	cfg.CPUs = 2
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	args := strings.Join(machineArgs(cfg), " ")
	for _, want := range []string{
		"-accel tcg,thread=single -smp 2",
		"-drive file=" + cfg.Disk + ",format=qcow2,if=virtio,",
		"-chardev file,id=console,append=on,path=" + cfg.Console + " -serial chardev:console",
		"-qmp unix:" + cfg.Monitor + ",server=on,wait=off",
		"-kernel " + cfg.Kernel + " -initrd " + cfg.Initrd,
		"root=/dev/vda rw",
		"lsm=" + LSMs,
		"-fsdev local,id=fs0,path=" + cfg.Shares[0].Dir + ",security_model=none,readonly=on -device virtio-9p-pci,fsdev=fs0,mount_tag=podarmor-node",
		"-fsdev local,id=fs1,path=" + cfg.Shares[1].Dir + ",security_model=none -device virtio-9p-pci,fsdev=fs1,mount_tag=logs",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("the machine's arguments lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "thread=multi") {
		t.Errorf("a machine runs multi-threaded TCG: %s", args)
	}

	got := netArgsWith([]Forward{{GuestAddr: "10.0.2.100:6443", Host: "127.0.0.1:41234"}},
		[]HostForward{{Host: "127.0.0.1:41235", GuestPort: 8132}}, "/bin/busybox", []int{50001})
	want := []string{
		"-netdev", "user,id=net0,restrict=on,ipv6=off," +
			"hostfwd=tcp:127.0.0.1:41235-:8132," +
			"guestfwd=tcp:10.0.2.100:6443-cmd:'/bin/busybox' nc 127.0.0.1 50001",
		"-device", "virtio-net-pci,netdev=net0,romfile=",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// TestServeRelay relays a unix socket to a TCP listener and back.
func TestServeRelay(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	go func() {
		c, err := tcp.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := c.Read(buf); err == nil {
			c.Write([]byte("pong:" + string(buf)))
		}
	}()
	sock := filepath.Join(t.TempDir(), "relay.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stop := ServeRelay(ln, tcp.Addr().String(), func(s string) { t.Log(s) })
	defer stop()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.(*net.UnixConn).CloseWrite()
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if got := string(buf[:n]); got != "pong:hello" {
		t.Errorf("through the relay: %q, want %q", got, "pong:hello")
	}
}
