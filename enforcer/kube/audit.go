package kube

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// The kernel's audit netlink multicast group (linux/audit.h): every audit record, AppArmor's
// decisions among them, is sent to its members whether or not an audit daemon runs.
const (
	auditNetlinkGroupReadLog = 1 // AUDIT_NLGRP_READLOG
	// auditReceiveBuffer is asked for the socket; the kernel caps it at net.core.rmem_max.
	auditReceiveBuffer = 1 << 20
)

// auditLog reads the kernel's audit records from the audit netlink multicast group. It
// is how the Kubernetes mode sees AppArmor's decisions: /dev/kmsg, where the standalone
// mode reads them, is a device a container's device cgroup does not allow, and the
// kernel log rate-limits audit lines, which the multicast group does not.
//
// Joining the group needs CAP_AUDIT_READ, and the kernel sends records only to sockets
// in the initial network namespace: the enforcer's pod runs with hostNetwork.
type auditLog struct {
	f *os.File
	// lost counts the times the socket's buffer overflowed (records were lost).
	lost func()
	// stopped, if set, is told why reading stopped before ctx ended.
	stopped func(error)
}

// openAuditLog joins the audit multicast group. lost, if set, is called whenever the
// kernel reports that records were lost because the socket's buffer was full.
func openAuditLog(lost func()) (*auditLog, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.NETLINK_AUDIT)
	if err != nil {
		return nil, fmt.Errorf("audit netlink socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: auditNetlinkGroupReadLog}); err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EPERM) {
			return nil, fmt.Errorf("join the audit log multicast group: %w (needs CAP_AUDIT_READ)", err)
		}
		return nil, fmt.Errorf("join the audit log multicast group: %w", err)
	}
	// A larger buffer rides out bursts; failing to get it is not fatal.
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, auditReceiveBuffer)
	return &auditLog{f: os.NewFile(uintptr(fd), "audit-netlink"), lost: lost}, nil
}

// inInitialNetNamespace reports whether the process is in the initial network namespace,
// the only one the kernel sends audit records to. It compares the namespace of proc's
// process 1 (the node's init, with hostPID) with its own; ok is false when that cannot be
// told.
func inInitialNetNamespace(proc string) (in, ok bool) {
	own, err1 := os.Readlink(proc + "/self/ns/net")
	initNS, err2 := os.Readlink(proc + "/1/ns/net")
	if err1 != nil || err2 != nil {
		return false, false
	}
	return own == initNS, true
}

// records streams the text of each audit record from now on, until ctx ends.
func (l *auditLog) records(ctx context.Context) <-chan string {
	out := make(chan string, 256)
	stop := context.AfterFunc(ctx, func() { l.f.Close() })
	go func() {
		defer close(out)
		defer stop()
		buf := make([]byte, 64<<10)
		for {
			n, err := l.f.Read(buf)
			if errors.Is(err, syscall.ENOBUFS) {
				if l.lost != nil {
					l.lost()
				}
				continue
			}
			if err != nil {
				if ctx.Err() == nil && l.stopped != nil {
					l.stopped(err)
				}
				return
			}
			for _, text := range auditTexts(buf[:n]) {
				select {
				case out <- text:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// auditTexts are the texts of the audit records in one netlink datagram ("audit(…):
// apparmor=…" for an AppArmor decision); netlink's own messages are skipped, and so is
// whatever follows a malformed header. The kernel sends an audit record without the
// padding to 4 bytes that netlink messages normally carry (the datagram ends where
// the text does), which syscall.ParseNetlinkMessage refuses; hence this parser.
func auditTexts(datagram []byte) []string {
	var out []string
	for len(datagram) >= syscall.NLMSG_HDRLEN {
		length := int(binary.NativeEndian.Uint32(datagram[0:4]))
		typ := binary.NativeEndian.Uint16(datagram[4:6])
		if length < syscall.NLMSG_HDRLEN || length > len(datagram) {
			break
		}
		if typ >= auditFirstUserMessage {
			out = append(out, string(bytes.TrimRight(datagram[syscall.NLMSG_HDRLEN:length], "\x00\n")))
		}
		next := (length + syscall.NLMSG_ALIGNTO - 1) &^ (syscall.NLMSG_ALIGNTO - 1)
		datagram = datagram[min(next, len(datagram)):]
	}
	return out
}

// auditFirstUserMessage is the first audit record type (AUDIT_FIRST_USER_MSG); lower
// types are netlink control messages and audit commands.
const auditFirstUserMessage = 1100
