package event

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

func comm(s string) (c [16]byte) {
	copy(c[:], s)
	return c
}

func TestFromBPF(t *testing.T) {
	tests := map[string]struct {
		te   tables.Event
		path string
		addr netip.AddrPort
		want Record
	}{
		"a denied read names the permission and the path": {
			te:   tables.Event{TGID: 7, Container: 4026532300, Action: tables.ActionEnforce, Hook: tables.HookFileOpen, Detail: uint32(tables.PermRead), Comm: comm("cat")},
			path: "/run/secrets/kubernetes.io/serviceaccount/token",
			want: Record{Enforcer: "BPF", Action: "Enforce", Hook: "file_open", Operation: "read",
				Path: "/run/secrets/kubernetes.io/serviceaccount/token", MountNamespace: 4026532300, PID: 7, Comm: "cat"},
		},
		"an audited capability names the capability": {
			te:   tables.Event{Action: tables.ActionAudit, Hook: tables.HookCapable, Detail: 21},
			want: Record{Enforcer: "BPF", Action: "Audit", Hook: "capable", Operation: "capability SYS_ADMIN"},
		},
		"a connection names the protocol and address": {
			te:   tables.Event{Action: tables.ActionEnforce, Hook: tables.HookConnect, Detail: 6},
			addr: netip.MustParseAddrPort("169.254.169.254:80"),
			want: Record{Enforcer: "BPF", Action: "Enforce", Hook: "socket_connect", Operation: "connect tcp", Address: "169.254.169.254:80"},
		},
		"a socket names family, type and protocol": {
			te:   tables.Event{Action: tables.ActionEnforce, Hook: tables.HookSocketCreate, Detail: 2, Detail2: 3<<16 | 1},
			want: Record{Enforcer: "BPF", Action: "Enforce", Hook: "socket_create", Operation: "socket inet/raw/icmp"},
		},
		"an operation rule names the operation": {
			te:   tables.Event{Action: tables.ActionEnforce, Hook: tables.HookOperation, Detail: uint32(tables.OpUsernsCreate)},
			want: Record{Enforcer: "BPF", Action: "Enforce", Hook: "operation", Operation: "usernsCreate"},
		},
		"a mount names the mount operation": {
			te:   tables.Event{Action: tables.ActionEnforce, Hook: tables.HookMount, Detail: tables.MountUmount},
			want: Record{Enforcer: "BPF", Action: "Enforce", Hook: "sb_mount", Operation: "umount"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := FromBPF(tc.te, "ap.default.p", "custom/r", tc.path, tc.addr)
			got.Time = time.Time{}
			tc.want.Profile, tc.want.Rule = "ap.default.p", "custom/r"
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestFromAppArmor(t *testing.T) {
	tests := map[string]struct {
		line string
		want *Record
	}{
		"a denied open from /dev/kmsg": {
			line: `5,1234,5678,-;audit: type=1400 audit(1700000000.123:45): apparmor="DENIED" operation="open" class="file" profile="podarmor-ap.default.p" name="/run/secrets/kubernetes.io/serviceaccount/token" pid=9 comm="cat" requested_mask="r" denied_mask="r" fsuid=0 ouid=0`,
			want: &Record{Enforcer: "AppArmor", Action: "Enforce", Profile: "ap.default.p", Hook: "open", Operation: "read",
				Path: "/run/secrets/kubernetes.io/serviceaccount/token", PID: 9, Comm: "cat"},
		},
		"an audited capability": {
			line: `audit: type=1300 audit(1.2:3): apparmor="AUDIT" operation="capable" class="cap" profile="podarmor-cap.x" pid=4 comm="chown" capability=0  capname="chown"`,
			want: &Record{Enforcer: "AppArmor", Action: "Audit", Profile: "cap.x", Hook: "capable", Operation: "capability CHOWN", PID: 4, Comm: "chown"},
		},
		"a name with a space comes hex-encoded": {
			line: `apparmor="DENIED" operation="unlink" profile="podarmor-p" name=2F746D702F612062 pid=1 comm="rm" requested_mask="d" denied_mask="d"`,
			want: &Record{Enforcer: "AppArmor", Action: "Enforce", Profile: "p", Hook: "unlink", Operation: "delete", Path: "/tmp/a b", PID: 1, Comm: "rm"},
		},
		"another profile's denial is not ours": {
			line: `apparmor="DENIED" operation="open" profile="docker-default" name="/etc/shadow" pid=1 comm="cat" denied_mask="r"`,
		},
		"a status message is no decision": {
			line: `audit: type=1400 audit(1.2:3): apparmor="STATUS" operation="profile_replace" profile="unconfined" name="podarmor-p" pid=3 comm="apparmor_parser"`,
		},
		"a line of another subsystem": {line: `6,1,2,-;virtio_net virtio0: link up`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := FromAppArmor(tc.line)
			if tc.want == nil {
				if ok {
					t.Errorf("parsed %+v", got)
				}
				return
			}
			got.Time = time.Time{}
			if !ok || got != *tc.want {
				t.Errorf("got  %+v (%v)\nwant %+v", got, ok, *tc.want)
			}
		})
	}
}

func TestAttribute(t *testing.T) {
	rs := &ruleset.RuleSet{Rules: []ruleset.Rule{
		{ID: "custom/audit-secrets", Action: v1alpha1.ActionAudit, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/secret/**"}, Permissions: []v1alpha1.FilePermission{"read"}}},
		{ID: "custom/guard", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/guard/*"}, Permissions: []v1alpha1.FilePermission{"write"}}},
		{ID: "builtin/token", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/run/secrets/**"}, Permissions: []v1alpha1.FilePermission{"read", "write"}}},
		{ID: "custom/no-nc", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindExec, Exec: &ruleset.Exec{Paths: []string{"/bin/nc"}}},
		{ID: "custom/caps", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindCapability,
			Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{"CHOWN"}}},
	}}
	tests := map[string]struct {
		r    Record
		want string
	}{
		"the rule whose pattern and permission match": {
			r: Record{Action: "Enforce", Operation: "read", Path: "/run/secrets/kubernetes.io/serviceaccount/token"}, want: "builtin/token",
		},
		"a rule of the other action does not count": {
			r: Record{Action: "Enforce", Operation: "read", Path: "/secret/a"},
		},
		"a rule that does not deny the permission does not count": {
			r: Record{Action: "Enforce", Operation: "read", Path: "/guard/x"},
		},
		"an exec":      {r: Record{Action: "Enforce", Operation: "exec", Path: "/bin/nc"}, want: "custom/no-nc"},
		"a capability": {r: Record{Action: "Enforce", Operation: "capability CHOWN"}, want: "custom/caps"},
		"a rule already known is kept": {
			r: Record{Action: "Enforce", Rule: "custom/x", Operation: "read", Path: "/run/secrets/a"}, want: "custom/x",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			Attribute(rs, &tc.r)
			if tc.r.Rule != tc.want {
				t.Errorf("rule %q, want %q", tc.r.Rule, tc.want)
			}
		})
	}
}

func TestRecordLines(t *testing.T) {
	r := Record{Enforcer: "BPF", Action: "Enforce", Profile: "ap.default.p", Rule: "builtin/disallow-read-serviceaccount-token",
		Hook: "file_open", Operation: "read", Path: "/run/secrets/kubernetes.io/serviceaccount/token", PID: 7, Comm: "cat"}
	want := "denied   read /run/secrets/kubernetes.io/serviceaccount/token  rule builtin/disallow-read-serviceaccount-token  (BPF file_open, cat pid 7)"
	if got := r.String(); got != want {
		t.Errorf("String:\n got %q\nwant %q", got, want)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Write(r); err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back != r {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
