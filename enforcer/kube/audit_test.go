package kube

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// netlinkMessage is one netlink message of type typ carrying data, padded as the kernel
// pads it.
func netlinkMessage(typ uint16, data string) []byte {
	n := syscall.NLMSG_HDRLEN + len(data)
	msg := make([]byte, (n+syscall.NLMSG_ALIGNTO-1)&^(syscall.NLMSG_ALIGNTO-1))
	binary.NativeEndian.PutUint32(msg[0:4], uint32(n))
	binary.NativeEndian.PutUint16(msg[4:6], typ)
	copy(msg[syscall.NLMSG_HDRLEN:], data)
	return msg
}

func TestAuditTexts(t *testing.T) {
	const avc = `audit(1700000000.123:45): apparmor="DENIED" operation="open" class="file" profile="podarmor-ap.shop.web" name="/secret" pid=9 comm="sh" requested_mask="r" denied_mask="r" fsuid=0 ouid=0`
	tests := map[string]struct {
		datagram []byte
		want     []string
	}{
		"an AppArmor record (AUDIT_AVC) is passed on without its padding": {
			datagram: netlinkMessage(1400, avc+"\x00"),
			want:     []string{avc},
		},
		"two records in one datagram are both passed on": {
			datagram: append(netlinkMessage(1400, avc), netlinkMessage(1300, "audit(1700000000.123:45): arch=c000003e syscall=257")...),
			want:     []string{avc, "audit(1700000000.123:45): arch=c000003e syscall=257"},
		},
		"a record that ends unpadded, as the kernel sends it, is passed on": {
			datagram: netlinkMessage(1400, avc+"x")[:syscall.NLMSG_HDRLEN+len(avc)+1],
			want:     []string{avc + "x"},
		},
		"netlink's own messages are skipped": {
			datagram: netlinkMessage(syscall.NLMSG_DONE, "x"),
		},
		"a truncated datagram yields nothing": {
			datagram: netlinkMessage(1400, avc)[:10],
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := auditTexts(tc.datagram); !slices.Equal(got, tc.want) {
				t.Errorf("auditTexts = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestInInitialNetNamespace: the kernel sends audit records only to the initial network
// namespace; an enforcer whose namespace is not init's (a pod without hostNetwork)
// knows it, and one that cannot tell says so.
func TestInInitialNetNamespace(t *testing.T) {
	tests := map[string]struct {
		self, init string
		in, ok     bool
	}{
		"the node's network namespace (hostNetwork)": {self: "net:[4026531840]", init: "net:[4026531840]", in: true, ok: true},
		"a pod's own network namespace":              {self: "net:[4026532301]", init: "net:[4026531840]", in: false, ok: true},
		"init's namespace cannot be read":            {self: "net:[4026532301]", ok: false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			proc := t.TempDir()
			for pid, target := range map[string]string{"self": tc.self, "1": tc.init} {
				if target == "" {
					continue
				}
				if err := os.MkdirAll(filepath.Join(proc, pid, "ns"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, filepath.Join(proc, pid, "ns", "net")); err != nil {
					t.Fatal(err)
				}
			}
			if in, ok := inInitialNetNamespace(proc); in != tc.in || ok != tc.ok {
				t.Errorf("inInitialNetNamespace = %v, %v; want %v, %v", in, ok, tc.in, tc.ok)
			}
		})
	}
}
