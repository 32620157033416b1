package trial

import (
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
)

// ociVersion is the runtime-spec version the config declares: the runc of Debian 12
// (1.1.5) implements 1.0.2, and nothing newer is used.
const ociVersion = "1.0.2"

// Service-account and cluster facts of the pod the container pretends to be in. The
// addresses are never reached: the container's network namespace has loopback only.
const (
	ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	podNamespace      = "default"
	serviceHost       = "10.96.0.1"
	servicePort       = "443"
	dnsServer         = "10.96.0.10"
)

// Default OCI masked and read-only paths, as containerd (and CRI-O) give every
// container that is not privileged.
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
	// defaultCapabilities are containerd's defaults for a container without
	// securityContext.capabilities.
	defaultCapabilities = []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
		"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
	}
)

// Mount is a bind mount into the container.
type Mount struct {
	// Source is the path in the VM.
	Source string
	// Destination is the path in the container.
	Destination string
	ReadOnly    bool
}

// SpecConfig is what a container's config.json is made of.
type SpecConfig struct {
	// Hostname is the pod's name.
	Hostname string
	// Rootfs is the root file system's directory.
	Rootfs string
	// Files is the directory holding the files kubelet would provide: hosts, hostname,
	// resolv.conf, termination-log and serviceaccount/.
	Files string
	// Args is the container's command.
	Args []string
	// Privileged gives every capability and device, and no masked or read-only paths.
	Privileged bool
	// Devices are the VM's devices, for a privileged container.
	Devices []specs.LinuxDevice
	// Mounts are the user's bind mounts, after the pod's own.
	Mounts []Mount
	// AppArmorProfile names the container's AppArmor profile; empty for none.
	AppArmorProfile string
	// Seccomp is the container's seccomp filter; nil for none.
	Seccomp *specs.LinuxSeccomp
	// Annotations go into the spec and the state hooks see.
	Annotations map[string]string
	// Hook is the podarmor OCI hook, run at createRuntime and poststop; nil for none.
	Hook *specs.Hook
	// CgroupsPath is the container's cgroup.
	CgroupsPath string
}

// Spec is the runtime-spec configuration of a container that looks like one of a pod:
// what containerd's CRI plugin builds for a container with no securityContext (or with
// privileged: true), with the mounts kubelet adds. It runs as root in new PID, IPC, UTS,
// mount, network and cgroup namespaces; runc brings up loopback in the new network
// namespace.
func Spec(c SpecConfig) *specs.Spec {
	caps := slices.Clone(defaultCapabilities)
	if c.Privileged {
		caps = nil
		for _, name := range v1alpha1.AllCapabilities {
			caps = append(caps, "CAP_"+string(name))
		}
	}
	s := &specs.Spec{
		Version: ociVersion,
		Process: &specs.Process{
			User: specs.User{UID: 0, GID: 0},
			Args: c.Args,
			Env: []string{
				"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				"HOSTNAME=" + c.Hostname,
				"KUBERNETES_SERVICE_HOST=" + serviceHost,
				"KUBERNETES_SERVICE_PORT=" + servicePort,
				"KUBERNETES_SERVICE_PORT_HTTPS=" + servicePort,
				"KUBERNETES_PORT=tcp://" + serviceHost + ":" + servicePort,
				"HOME=/root",
			},
			Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			ApparmorProfile: c.AppArmorProfile,
			OOMScoreAdj:     intPtr(1000),
		},
		Root:        &specs.Root{Path: c.Rootfs},
		Hostname:    c.Hostname,
		Mounts:      mounts(c),
		Annotations: c.Annotations,
		Linux: &specs.Linux{
			CgroupsPath: c.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
			},
			Seccomp: c.Seccomp,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
		},
	}
	if c.Privileged {
		s.Linux.Devices = c.Devices
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		s.Linux.MaskedPaths = slices.Clone(maskedPaths)
		s.Linux.ReadonlyPaths = slices.Clone(readonlyPaths)
	}
	if c.Hook != nil {
		s.Hooks = &specs.Hooks{
			CreateRuntime: []specs.Hook{*c.Hook},
			Poststop:      []specs.Hook{*c.Hook},
		}
	}
	return s
}

func intPtr(i int) *int { return &i }

// mounts are containerd's default mounts, kubelet's and the user's.
func mounts(c SpecConfig) []specs.Mount {
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	cgroupOpts := []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
	if c.Privileged {
		sysOpts = []string{"nosuid", "noexec", "nodev", "rw"}
		cgroupOpts = []string{"nosuid", "noexec", "nodev", "relatime", "rw"}
	}
	bind := func(src, dst string, ro bool) specs.Mount {
		opts := []string{"rbind", "rprivate", "rw"}
		if ro {
			opts[2] = "ro"
		}
		return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}
	}
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: cgroupOpts},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		bind(c.Files+"/hosts", "/etc/hosts", false),
		bind(c.Files+"/termination-log", "/dev/termination-log", false),
		bind(c.Files+"/hostname", "/etc/hostname", false),
		bind(c.Files+"/resolv.conf", "/etc/resolv.conf", false),
		bind(c.Files+"/serviceaccount", ServiceAccountDir, true),
	}
	for _, m := range c.Mounts {
		ms = append(ms, bind(m.Source, m.Destination, m.ReadOnly))
	}
	return ms
}
