package trial

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// WriteRootfs makes a busybox root file system under dir: the static busybox with a
// link for every applet, a root user, and the directories an image has. /var/run links
// to /run as on Debian and Alpine, so the service-account token a pod sees at
// /var/run/secrets/... is at /run/secrets/... too. dir must not hold one already.
// enforcer/bpf's kernel tests run their containers on the same root file system.
func WriteRootfs(dir, busybox string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home", "mnt", "opt", "srv", "proc", "sys", "dev", "run", "var/log", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o777|os.ModeSticky); err != nil {
		return err
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	applets, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("rootfs: %s --list-full: %w", busybox, err)
	}
	for applet := range strings.FieldsSeq(string(applets)) {
		if applet == "bin/busybox" {
			continue
		}
		if err := os.Symlink("/bin/busybox", filepath.Join(dir, applet)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	if err := os.Symlink("/run", filepath.Join(dir, "var/run")); err != nil {
		return err
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WritePodFiles writes what kubelet gives a container besides its image: /etc/hosts,
// /etc/hostname, /etc/resolv.conf, /dev/termination-log and the service-account volume
// (a token, the cluster's CA and the namespace).
func WritePodFiles(dir, hostname string) error {
	sa := filepath.Join(dir, "serviceaccount")
	if err := os.MkdirAll(sa, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"hosts": "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
			"fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n" +
			"127.0.1.1\t" + hostname + "\n",
		"hostname":                 hostname + "\n",
		"resolv.conf":              "search " + podNamespace + ".svc.cluster.local svc.cluster.local cluster.local\nnameserver " + dnsServer + "\noptions ndots:5\n",
		"termination-log":          "",
		"serviceaccount/token":     fakeToken(),
		"serviceaccount/namespace": podNamespace,
		"serviceaccount/ca.crt":    "-----BEGIN CERTIFICATE-----\n(podarmor try: a stand-in for the cluster's CA)\n-----END CERTIFICATE-----\n",
	}
	for name, content := range files {
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(name, "serviceaccount/") {
			mode = 0o600 // kubelet's projected volume gives the token mode 0600 (default mode 0644 for the rest)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			return err
		}
	}
	return nil
}

// fakeToken is a JWT-shaped stand-in for a service-account token, unique per run.
func fakeToken() string {
	enc := base64.RawURLEncoding
	nonce := make([]byte, 16)
	rand.Read(nonce)
	header := enc.EncodeToString([]byte(`{"alg":"RS256","kid":"podarmor-try"}`))
	claims := enc.EncodeToString([]byte(`{"iss":"https://kubernetes.default.svc.cluster.local","sub":"system:serviceaccount:` +
		podNamespace + `:default","jti":"` + enc.EncodeToString(nonce) + `"}`))
	return header + "." + claims + "." + enc.EncodeToString(nonce)
}

func copyFile(src, dst string, mode fs.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// hostDevices lists the character and block devices directly under dir (the VM's /dev),
// for a privileged container, as containerd gives a privileged container the node's.
func hostDevices(dir string) ([]specs.LinuxDevice, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []specs.LinuxDevice
	for _, e := range entries {
		if e.Name() == "ptmx" || e.Name() == "console" {
			continue // runc makes these itself: a link into the container's devpts, and its console
		}
		var typ string
		switch {
		case e.Type()&fs.ModeCharDevice != 0:
			typ = "c"
		case e.Type()&fs.ModeDevice != 0:
			typ = "b"
		default:
			continue
		}
		p := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			continue
		}
		mode := fs.FileMode(st.Mode & 0o777)
		uid, gid := st.Uid, st.Gid
		out = append(out, specs.LinuxDevice{
			Path: p, Type: typ,
			Major: int64(major(st.Rdev)), Minor: int64(minor(st.Rdev)),
			FileMode: &mode, UID: &uid, GID: &gid,
		})
	}
	return out, nil
}

// major and minor split a Linux dev_t (glibc's gnu_dev_major/minor).
func major(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func minor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
