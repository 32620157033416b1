package event

import (
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/pattern"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// profilePrefix starts the name of every AppArmor profile podarmor loads
// (policies/compile/apparmor.ProfileName).
const profilePrefix = "podarmor-"

// FromAppArmor parses one kernel log line holding an AppArmor audit message, as
// /dev/kmsg or dmesg show it when no audit daemon takes them:
//
//	audit: type=1400 audit(1700000000.123:45): apparmor="DENIED" operation="open"
//	  class="file" profile="podarmor-ap.default.p" name="/etc/shadow" pid=9 comm="cat"
//	  requested_mask="r" denied_mask="r" fsuid=0 ouid=0
//
// It returns false for any other line, and for messages about profiles that are not
// podarmor's. DENIED is an Enforce decision, AUDIT an Audit one. The rule is left empty;
// Attribute finds it.
func FromAppArmor(line string) (Record, bool) {
	i := strings.Index(line, `apparmor="`)
	if i < 0 {
		return Record{}, false
	}
	f := auditFields(line[i:])
	var action v1alpha1.Action
	switch f["apparmor"] {
	case "DENIED":
		action = v1alpha1.ActionEnforce
	case "AUDIT":
		action = v1alpha1.ActionAudit
	default:
		return Record{}, false
	}
	profile, ok := strings.CutPrefix(f["profile"], profilePrefix)
	if !ok {
		return Record{}, false
	}
	op := f["operation"]
	r := Record{
		Time:     time.Now().UTC(),
		Enforcer: v1alpha1.EnforcerAppArmor,
		Action:   action,
		Profile:  profile,
		Hook:     op,
		Path:     f["name"],
		Comm:     f["comm"],
	}
	if pid, err := strconv.ParseUint(f["pid"], 10, 32); err == nil {
		r.PID = uint32(pid)
	}
	mask := f["denied_mask"]
	if mask == "" {
		mask = f["requested_mask"]
	}
	switch {
	case f["capname"] != "":
		r.Operation = "capability " + strings.ToUpper(f["capname"])
		r.Path = ""
	case f["class"] == "net" || f["family"] != "":
		r.Operation = "socket " + f["family"]
		if t := f["sock_type"]; t != "" {
			r.Operation += "/" + t
		}
	case f["class"] == "ptrace" || op == "ptrace":
		r.Operation = "ptrace " + mask
		if peer := f["peer"]; peer != "" {
			r.Operation += " (peer " + peer + ")"
		}
	case op == "mount" || op == "umount" || op == "pivotroot":
		r.Operation = op
	default:
		r.Operation = strings.Join(filePermissions(op, mask), ",")
		if r.Operation == "" {
			r.Operation = op
		}
	}
	return r, true
}

// filePermissions are the API's file permissions an AppArmor file operation and mask
// stand for.
func filePermissions(op, mask string) []string {
	switch op {
	case "chmod":
		return []string{string(v1alpha1.FileChmod)}
	case "chown":
		return []string{string(v1alpha1.FileChown)}
	case "unlink", "rmdir":
		return []string{string(v1alpha1.FileDelete)}
	case "rename_src", "rename_dest":
		return []string{string(v1alpha1.FileRename)}
	case "link":
		return []string{string(v1alpha1.FileLink)}
	case "mkdir", "mknod":
		return []string{string(v1alpha1.FileCreate)}
	case "exec":
		return []string{"exec"}
	}
	var out []string
	for _, c := range mask {
		var p string
		switch c {
		case 'r':
			p = string(v1alpha1.FileRead)
		case 'w':
			p = string(v1alpha1.FileWrite)
		case 'a':
			p = string(v1alpha1.FileAppend)
		case 'c':
			p = string(v1alpha1.FileCreate)
		case 'd':
			p = string(v1alpha1.FileDelete)
		case 'l':
			p = string(v1alpha1.FileLink)
		case 'x':
			p = "exec"
		default:
			continue
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// auditFields splits the key=value pairs of an audit message. Values are "quoted" or
// bare; AppArmor writes a bare hex string for a name with spaces or other special bytes,
// which is decoded.
func auditFields(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		s = strings.TrimLeft(s, " ")
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				val, s = s[1:], ""
			} else {
				val, s = s[1:1+end], s[2+end:]
			}
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
			if key == "name" || key == "comm" || key == "profile" {
				if b, err := hex.DecodeString(val); err == nil && len(val) > 0 {
					val = string(b)
				}
			}
		}
		out[key] = val
	}
	return out
}

// Attribute sets r.Rule, when it is empty, to the first rule of rs that covers the
// decision: a file or exec rule of the same action whose pattern matches the path and
// that denies one of the operation's permissions, or a capability rule that names the
// capability. Other kinds are left unattributed: AppArmor's message does not carry
// enough to tell rules apart.
func Attribute(rs *ruleset.RuleSet, r *Record) {
	if r.Rule != "" || rs == nil {
		return
	}
	perms := strings.Split(r.Operation, ",")
	for _, rule := range rs.Rules {
		if rule.Action != r.Action {
			continue
		}
		var paths []string
		var denies []string
		switch {
		case rule.File != nil:
			paths = rule.File.Paths
			for _, p := range rule.File.Permissions {
				denies = append(denies, string(p))
			}
		case rule.Exec != nil:
			paths, denies = rule.Exec.Paths, []string{"exec"}
		case rule.Capability != nil:
			name, ok := strings.CutPrefix(r.Operation, "capability ")
			if ok && slices.Contains(rule.Capability.Capabilities, v1alpha1.Capability(name)) {
				r.Rule = rule.ID
				return
			}
			continue
		default:
			continue
		}
		if r.Path == "" || !slices.ContainsFunc(perms, func(p string) bool { return slices.Contains(denies, p) }) {
			continue
		}
		for _, p := range paths {
			pat, err := pattern.Parse(p)
			if err == nil && pat.Match(r.Path) {
				r.Rule = rule.ID
				return
			}
		}
	}
}
