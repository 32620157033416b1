package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/podarmor/podarmor/enforcer/tables"
	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// checkRecord checks what every record must give: a line for people, and JSON that reads
// back as the record. JSON has no bytes that are not UTF-8: a path or command name
// holding such bytes reads back with U+FFFD in their place (docs/robustness.md).
func checkRecord(t *testing.T, r Record) {
	t.Helper()
	if r.Operation == "" || r.Enforcer == "" || r.Action == "" {
		t.Fatalf("record %+v lacks its operation, enforcer or action", r)
	}
	if s := r.String(); !strings.Contains(s, r.Operation) {
		t.Fatalf("line %q does not name the operation %q", s, r.Operation)
	}
	var buf bytes.Buffer
	if err := NewWriter(&buf).Write(r); err != nil {
		t.Fatalf("write %+v: %v", r, err)
	}
	if bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("record %+v is not one line: %q", r, buf.Bytes())
	}
	var back Record
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatalf("read back %s: %v", buf.Bytes(), err)
	}
	// Each field on its own: invalid bytes of two fields can make a valid sequence
	// together.
	valid := true
	for _, s := range []string{r.Profile, r.Rule, r.Hook, r.Operation, r.Path, r.Comm} {
		valid = valid && utf8.ValidString(s)
	}
	if valid {
		if back != r {
			t.Fatalf("record %+v reads back as %+v", r, back)
		}
	} else if back.PID != r.PID || back.Operation == "" && r.Operation != "" {
		t.Fatalf("record %+v reads back as %+v", r, back)
	}
}

// encodeEvent is the ring buffer record of e, as the BPF programs write it.
func encodeEvent(t testing.TB, e tables.Event) []byte {
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, e); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzBPFEvent decodes arbitrary ring buffer records as the enforcer does
// (tables.DecodeEvent, then the record's path and address, then FromBPF). A record
// shorter than struct event is an error; any other gives a record with its operation,
// a line for people and one line of JSON.
func FuzzBPFEvent(f *testing.F) {
	path := func(s string) (p [tables.EventPath]byte) { copy(p[:], s); return p }
	seeds := []tables.Event{
		{TGID: 7, Container: 4026532300, Action: tables.ActionEnforce, Hook: tables.HookFileOpen, Detail: uint32(tables.PermRead),
			Comm: comm("cat"), PathLen: 47, Path: path("/run/secrets/kubernetes.io/serviceaccount/token")},
		{Action: tables.ActionAudit, Hook: tables.HookCapable, Detail: 21},
		{Action: tables.ActionEnforce, Hook: tables.HookConnect, Detail: 6, Family: 2, Port: 80, Addr: [16]byte{169, 254, 169, 254}},
		{Action: tables.ActionEnforce, Hook: tables.HookSendmsg, Detail: 17, Family: 10, Port: 53, Addr: [16]byte{0xfd, 0, 0xec, 2, 15: 0x54}},
		{Action: tables.ActionEnforce, Hook: tables.HookSocketCreate, Detail: 2, Detail2: 3<<16 | 1},
		{Action: tables.ActionEnforce, Hook: tables.HookOperation, Detail: uint32(tables.OpUsernsCreate)},
		{Action: tables.ActionEnforce, Hook: tables.HookMount, Detail: tables.MountUmount, Path: path("/proc")},
		{Action: tables.ActionEnforce, Hook: tables.HookPath, Detail: uint32(tables.PermRename), Detail2: 1, Path: path("/guard")},
		{Action: tables.ActionEnforce, Hook: tables.HookPtrace, Detail: 1, Detail2: 4242},
		{Action: tables.ActionEnforce, Hook: tables.HookExec, Detail: uint32(tables.PermExec), Path: path("/bin/\xff\x01sh"), Comm: comm("\xffsh")},
	}
	for _, e := range seeds {
		f.Add(encodeEvent(f, e))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		te, err := tables.DecodeEvent(raw)
		if len(raw) < binary.Size(tables.Event{}) {
			if err == nil {
				t.Fatalf("a record of %d bytes decoded", len(raw))
			}
			return
		}
		if err != nil {
			t.Fatalf("a record of %d bytes: %v", len(raw), err)
		}
		if !bytes.Equal(encodeEvent(t, te), raw[:binary.Size(te)]) {
			t.Fatalf("the event does not encode back to its record")
		}
		p := te.PathText()
		if strings.IndexByte(p, 0) >= 0 || len(p) > tables.EventPath {
			t.Fatalf("path %q holds a NUL or is longer than the buffer", p)
		}
		addr := te.Address()
		if addr.IsValid() != (te.Family == 2 || te.Family == 10) {
			t.Fatalf("family %d gave address %v", te.Family, addr)
		}
		r := FromBPF(te, "ap.shop.web", "custom/r", p, addr)
		if r.Enforcer != v1alpha1.EnforcerBPF || r.Path != p || r.PID != te.TGID || r.MountNamespace != te.Container {
			t.Fatalf("record %+v does not carry the event %+v", r, te)
		}
		checkRecord(t, r)
	})
}

// FuzzAppArmorLine parses arbitrary kernel log lines as the enforcer reads /dev/kmsg:
// a line is a record only when it is an AppArmor DENIED or AUDIT message about a
// podarmor profile, and every record attributes, prints and encodes.
func FuzzAppArmorLine(f *testing.F) {
	for _, s := range []string{
		`5,1234,5678,-;audit: type=1400 audit(1700000000.123:45): apparmor="DENIED" operation="open" class="file" profile="podarmor-ap.default.p" name="/run/secrets/kubernetes.io/serviceaccount/token" pid=9 comm="cat" requested_mask="r" denied_mask="r" fsuid=0 ouid=0`,
		`audit: type=1300 audit(1.2:3): apparmor="AUDIT" operation="capable" class="cap" profile="podarmor-cap.x" pid=4 comm="chown" capability=0  capname="chown"`,
		`apparmor="DENIED" operation="unlink" profile="podarmor-p" name=2F746D702F612062 pid=1 comm="rm" requested_mask="d" denied_mask="d"`,
		`apparmor="DENIED" operation="create" class="net" profile="podarmor-p" pid=2 comm="ping" family="inet" sock_type="raw" protocol=1 requested_mask="create" denied_mask="create"`,
		`apparmor="DENIED" operation="ptrace" class="ptrace" profile="podarmor-p" pid=3 comm="strace" requested_mask="trace" denied_mask="trace" peer="unconfined"`,
		`apparmor="DENIED" operation="mount" class="mount" info="failed mntpnt match" error=-13 profile="podarmor-p" name="/mnt/" pid=4 comm="mount" fstype="proc" srcname="proc"`,
		`apparmor="DENIED" operation="exec" profile="podarmor-p" name="/bin/nc" pid=5 comm=FF6E63 requested_mask="x" denied_mask="x"`,
		`audit: type=1400 audit(1.2:3): apparmor="STATUS" operation="profile_replace" profile="unconfined" name="podarmor-p" pid=3 comm="apparmor_parser"`,
		`6,1,2,-;virtio_net virtio0: link up`,
	} {
		f.Add(s)
	}
	rs := &ruleset.RuleSet{Rules: []ruleset.Rule{
		{ID: "custom/guard", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindFile,
			File: &ruleset.File{Paths: []string{"/run/secrets/**", "/tmp/*"}, Permissions: []v1alpha1.FilePermission{"read", "delete"}}},
		{ID: "custom/no-nc", Action: v1alpha1.ActionEnforce, Kind: ruleset.KindExec, Exec: &ruleset.Exec{Paths: []string{"/bin/nc"}}},
		{ID: "custom/caps", Action: v1alpha1.ActionAudit, Kind: ruleset.KindCapability,
			Capability: &ruleset.Capability{Capabilities: []v1alpha1.Capability{"CHOWN"}}},
	}}
	f.Fuzz(func(t *testing.T, line string) {
		r, ok := FromAppArmor(line)
		if !ok {
			return
		}
		if !strings.Contains(line, `apparmor="DENIED"`) && !strings.Contains(line, `apparmor="AUDIT"`) {
			t.Fatalf("line %q is no AppArmor decision but gave %+v", line, r)
		}
		if r.Enforcer != v1alpha1.EnforcerAppArmor {
			t.Fatalf("record %+v of line %q", r, line)
		}
		Attribute(rs, &r)
		if r.Operation == "" {
			return // a message without an operation prints as such; nothing more to check
		}
		checkRecord(t, r)
	})
}
