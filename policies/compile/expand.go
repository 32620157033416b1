package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/catalog"
	"github.com/podarmor/podarmor/policies/pattern"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Placeholders that egress addresses may use; Options supplies their values.
const (
	// PlaceholderAPIServer stands for the addresses of the cluster's kubernetes Service.
	PlaceholderAPIServer = "$APISERVER"
	// PlaceholderClusterCIDRs stands for the cluster's pod and service CIDRs.
	PlaceholderClusterCIDRs = "$CLUSTER_CIDRS"
)

// RuleSet compiles a policy into the enforcer-neutral rule set. Errors name the field of
// the policy they are about; a policy with errors yields no rule set.
func RuleSet(p Policy, o Options) (*ruleset.RuleSet, field.ErrorList) {
	o, err := o.defaults()
	if err != nil {
		return nil, field.ErrorList{field.InternalError(nil, err)}
	}
	rs, _, errs := expand(p, o)
	return rs, errs
}

// expand compiles the rule set and says where each rule id came from: the field of the
// policy, or nil for rules the mode adds (the runtime-default entries of the catalog).
func expand(p Policy, o Options) (*ruleset.RuleSet, map[string]*field.Path, field.ErrorList) {
	spec := field.NewPath("spec")
	x := expander{opts: o, sources: map[string]*field.Path{}}
	errs := x.checkSpec(p.Spec, spec)

	action := p.Spec.Action
	if action == "" {
		action = v1alpha1.ActionEnforce
	}
	switch p.Spec.Mode {
	case v1alpha1.ModeAlwaysAllow:
	case v1alpha1.ModeRuntimeDefault, v1alpha1.ModeEnhanceProtect:
		chosen := map[string]bool{}
		for _, b := range p.Spec.BuiltinRules {
			chosen[b.Name] = true
		}
		for _, e := range o.Catalog.RuntimeDefault() {
			if !chosen[e.Name] {
				errs = append(errs, x.entry(e, action, spec.Child("mode"))...)
				x.sources["builtin/"+e.Name] = nil
			}
		}
	}
	if p.Spec.Mode == v1alpha1.ModeEnhanceProtect {
		builtins := slices.Clone(p.Spec.BuiltinRules)
		order := map[string]int{}
		for i, b := range p.Spec.BuiltinRules {
			order[b.Name] = i
		}
		slices.SortFunc(builtins, func(a, b v1alpha1.BuiltinRule) int { return strings.Compare(a.Name, b.Name) })
		for _, b := range builtins {
			path := spec.Child("builtinRules").Index(order[b.Name])
			e, ok := o.Catalog.Lookup(b.Name)
			if !ok {
				errs = append(errs, field.NotFound(path.Child("name"), b.Name))
				continue
			}
			errs = append(errs, x.entry(e, orDefault(b.Action, action), path)...)
			x.sources["builtin/"+e.Name] = path
		}
		if p.Spec.CustomRules != nil {
			errs = append(errs, x.custom(*p.Spec.CustomRules, action, spec.Child("customRules"))...)
		}
	}
	if len(errs) > 0 {
		return nil, nil, errs
	}
	enforcers := slices.Clone(p.Spec.Enforcers)
	slices.SortFunc(enforcers, func(a, b v1alpha1.Enforcer) int {
		return slices.Index(v1alpha1.Enforcers, a) - slices.Index(v1alpha1.Enforcers, b)
	})
	return &ruleset.RuleSet{
		ProfileID: p.ProfileID(),
		Policy:    p.String(),
		Mode:      p.Spec.Mode,
		Enforcers: slices.Compact(enforcers),
		Default:   ruleset.Allow,
		Rules:     x.rules,
	}, x.sources, nil
}

// expander accumulates the rules of one policy.
type expander struct {
	opts    Options
	rules   []ruleset.Rule
	sources map[string]*field.Path
}

// checkSpec checks what the CRD schema checks on the API server, so that the CLI and
// any caller outside the API server get the same answer.
func (x *expander) checkSpec(s v1alpha1.ArmorPolicySpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Enforcers) == 0 {
		errs = append(errs, field.Required(path.Child("enforcers"), "name at least one of BPF, AppArmor, Seccomp"))
	}
	seen := map[v1alpha1.Enforcer]bool{}
	for i, e := range s.Enforcers {
		p := path.Child("enforcers").Index(i)
		switch {
		case !slices.Contains(v1alpha1.Enforcers, e):
			errs = append(errs, field.NotSupported(p, e, v1alpha1.Enforcers))
		case seen[e]:
			errs = append(errs, field.Duplicate(p, e))
		}
		seen[e] = true
	}
	modes := []v1alpha1.Mode{v1alpha1.ModeAlwaysAllow, v1alpha1.ModeRuntimeDefault, v1alpha1.ModeEnhanceProtect}
	if !slices.Contains(modes, s.Mode) {
		errs = append(errs, field.NotSupported(path.Child("mode"), s.Mode, modes))
	}
	errs = append(errs, checkAction(s.Action, path.Child("action"))...)
	if s.Mode != v1alpha1.ModeEnhanceProtect {
		if len(s.BuiltinRules) > 0 {
			errs = append(errs, field.Forbidden(path.Child("builtinRules"), "builtinRules take effect only in mode EnhanceProtect"))
		}
		if s.CustomRules != nil {
			errs = append(errs, field.Forbidden(path.Child("customRules"), "customRules take effect only in mode EnhanceProtect"))
		}
	}
	names := map[string]bool{}
	for i, b := range s.BuiltinRules {
		p := path.Child("builtinRules").Index(i)
		if names[b.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), b.Name))
		}
		names[b.Name] = true
		errs = append(errs, checkAction(b.Action, p.Child("action"))...)
	}
	if s.CustomRules != nil && len(s.CustomRules.Syscalls) > 0 && !seen[v1alpha1.EnforcerSeccomp] {
		errs = append(errs, field.Forbidden(path.Child("customRules", "syscalls"), "system call rules need the Seccomp enforcer"))
	}
	return errs
}

func checkAction(a v1alpha1.Action, path *field.Path) field.ErrorList {
	actions := []v1alpha1.Action{v1alpha1.ActionEnforce, v1alpha1.ActionAudit}
	if a != "" && !slices.Contains(actions, a) {
		return field.ErrorList{field.NotSupported(path, a, actions)}
	}
	return nil
}

func orDefault(a, def v1alpha1.Action) v1alpha1.Action {
	if a == "" {
		return def
	}
	return a
}

// entry adds the rules of a catalog entry. The catalog's own tests make sure its rules
// are valid; what can still fail here is a placeholder the options leave unset.
func (x *expander) entry(e catalog.Entry, action v1alpha1.Action, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	sub := expander{opts: x.opts}
	for _, err := range sub.custom(e.Rules, action, field.NewPath("rules")) {
		errs = append(errs, field.Invalid(path, e.Name, fmt.Sprintf("built-in rule %s: %s", e.Name, err.Error())))
	}
	for _, r := range sub.rules {
		r.ID = "builtin/" + e.Name
		x.rules = append(x.rules, r)
	}
	return errs
}

// custom adds custom rules, each with the ID "custom/<name>".
func (x *expander) custom(c v1alpha1.CustomRules, action v1alpha1.Action, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	names := map[string]*field.Path{}
	add := func(kind string, i int, m v1alpha1.RuleMeta, r ruleset.Rule) {
		p := path.Child(kind).Index(i)
		name := m.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", kind, i)
		}
		if prev, dup := names[name]; dup {
			errs = append(errs, field.Duplicate(p.Child("name"), name+" (also "+prev.String()+")"))
		}
		names[name] = p
		errs = append(errs, checkAction(m.Action, p.Child("action"))...)
		r.ID = "custom/" + name
		if x.sources != nil {
			x.sources[r.ID] = p
		}
		r.Action = orDefault(m.Action, action)
		x.rules = append(x.rules, r)
	}
	for i, r := range c.Files {
		p := path.Child("files").Index(i)
		errs = append(errs, checkPatterns(r.Paths, p.Child("paths"), true)...)
		errs = append(errs, checkEnum(r.Permissions, p.Child("permissions"), true, filePermissions)...)
		add("files", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindFile, File: &ruleset.File{
			Paths: dedupe(r.Paths), Permissions: sortedSet(r.Permissions, filePermissions),
		}})
	}
	for i, r := range c.Exec {
		p := path.Child("exec").Index(i)
		errs = append(errs, checkPatterns(r.Paths, p.Child("paths"), true)...)
		add("exec", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindExec, Exec: &ruleset.Exec{Paths: dedupe(r.Paths)}})
	}
	for i, r := range c.Network {
		p := path.Child("network").Index(i)
		switch {
		case (r.Sockets == nil) == (r.Egress == nil):
			errs = append(errs, field.Invalid(p, "", "exactly one of sockets or egress must be set"))
		case r.Sockets != nil:
			s := r.Sockets
			errs = append(errs, checkEnum(s.Families, p.Child("sockets", "families"), false, socketFamilies)...)
			errs = append(errs, checkEnum(s.Types, p.Child("sockets", "types"), false, socketTypes)...)
			errs = append(errs, checkEnum(s.Protocols, p.Child("sockets", "protocols"), false, protocols)...)
			add("network", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindSocket, Socket: &ruleset.Socket{
				Families:  sortedSet(s.Families, socketFamilies),
				Types:     sortedSet(s.Types, socketTypes),
				Protocols: sortedSet(s.Protocols, protocols),
			}})
		default:
			eg, perrs := x.egress(*r.Egress, p.Child("egress"))
			errs = append(errs, perrs...)
			add("network", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindEgress, Egress: eg})
		}
	}
	for i, r := range c.Capabilities {
		p := path.Child("capabilities").Index(i)
		errs = append(errs, checkEnum(r.Capabilities, p.Child("capabilities"), true, v1alpha1.AllCapabilities)...)
		add("capabilities", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindCapability, Capability: &ruleset.Capability{
			Capabilities: sortedSet(r.Capabilities, v1alpha1.AllCapabilities),
		}})
	}
	for i, r := range c.Ptrace {
		p := path.Child("ptrace").Index(i)
		errs = append(errs, checkEnum(r.Permissions, p.Child("permissions"), true, ptracePermissions)...)
		peers := r.Peers
		if peers == "" {
			peers = v1alpha1.PtraceOutsideContainer
		}
		errs = append(errs, checkEnum([]v1alpha1.PtracePeers{peers}, p.Child("peers"), true, ptracePeers)...)
		add("ptrace", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindPtrace, Ptrace: &ruleset.Ptrace{
			Permissions: sortedSet(r.Permissions, ptracePermissions), Peers: peers,
		}})
	}
	for i, r := range c.Mounts {
		p := path.Child("mounts").Index(i)
		ops := r.Operations
		if len(ops) == 0 {
			ops = []v1alpha1.MountOperation{v1alpha1.MountMount}
		}
		errs = append(errs, checkEnum(ops, p.Child("operations"), true, mountOperations)...)
		errs = append(errs, checkEnum(r.Flags, p.Child("flags"), false, mountFlags)...)
		errs = append(errs, checkPatterns(r.Sources, p.Child("sources"), false)...)
		errs = append(errs, checkPatterns(r.Targets, p.Child("targets"), false)...)
		for j, fs := range r.FSTypes {
			if fs == "" || strings.ContainsAny(fs, " /,\x00") {
				errs = append(errs, field.Invalid(p.Child("fsTypes").Index(j), fs, "not a filesystem type name"))
			}
		}
		if !slices.Contains(ops, v1alpha1.MountMount) && (len(r.FSTypes)+len(r.Flags)+len(r.Sources) > 0) {
			errs = append(errs, field.Invalid(p.Child("operations"), ops, "fsTypes, flags and sources only apply to the mount operation"))
		}
		fsTypes := dedupe(r.FSTypes)
		slices.Sort(fsTypes)
		add("mounts", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindMount, Mount: &ruleset.Mount{
			Operations: sortedSet(ops, mountOperations),
			FSTypes:    fsTypes,
			Flags:      sortedSet(r.Flags, mountFlags),
			Sources:    dedupe(r.Sources),
			Targets:    dedupe(r.Targets),
		}})
	}
	for i, r := range c.Operations {
		p := path.Child("operations").Index(i)
		errs = append(errs, checkEnum(r.Operations, p.Child("operations"), true, operations)...)
		add("operations", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindOperation, Operation: &ruleset.Operation{
			Operations: sortedSet(r.Operations, operations),
		}})
	}
	for i, r := range c.Syscalls {
		p := path.Child("syscalls").Index(i)
		if len(r.Names) == 0 {
			errs = append(errs, field.Required(p.Child("names"), "name at least one system call"))
		}
		if len(r.Args) > 6 {
			errs = append(errs, field.TooMany(p.Child("args"), len(r.Args), 6))
		}
		for j, a := range r.Args {
			ap := p.Child("args").Index(j)
			if a.Index < 0 || a.Index > 5 {
				errs = append(errs, field.Invalid(ap.Child("index"), a.Index, "system calls have arguments 0 to 5"))
			}
			errs = append(errs, checkEnum([]v1alpha1.SyscallArgOp{a.Op}, ap.Child("op"), true, syscallArgOps)...)
			if a.Value < 0 {
				errs = append(errs, field.Invalid(ap.Child("value"), a.Value, "must not be negative"))
			}
			if a.ValueTwo < 0 {
				errs = append(errs, field.Invalid(ap.Child("valueTwo"), a.ValueTwo, "must not be negative"))
			}
		}
		names := dedupe(r.Names)
		slices.Sort(names)
		add("syscalls", i, r.RuleMeta, ruleset.Rule{Kind: ruleset.KindSyscall, Syscall: &ruleset.Syscall{
			Names: names, Args: slices.Clone(r.Args),
		}})
	}
	return errs
}

// egress turns addresses into prefixes, expanding placeholders.
func (x *expander) egress(e v1alpha1.EgressMatch, path *field.Path) (*ruleset.Egress, field.ErrorList) {
	var errs field.ErrorList
	out := &ruleset.Egress{Protocols: sortedSet(e.Protocols, protocols)}
	errs = append(errs, checkEnum(e.Protocols, path.Child("protocols"), false, protocols)...)
	for i, a := range e.Addresses {
		p := path.Child("addresses").Index(i)
		switch a {
		case PlaceholderAPIServer:
			if len(x.opts.APIServer) == 0 {
				errs = append(errs, field.Invalid(p, a, "the API server's address is not configured (podarmor: --apiserver-address)"))
			}
			for _, addr := range x.opts.APIServer {
				out.Prefixes = append(out.Prefixes, netip.PrefixFrom(addr, addr.BitLen()))
			}
			continue
		case PlaceholderClusterCIDRs:
			if len(x.opts.ClusterCIDRs) == 0 {
				errs = append(errs, field.Invalid(p, a, "the cluster's CIDRs are not configured (podarmor: --cluster-cidr)"))
			}
			out.Prefixes = append(out.Prefixes, x.opts.ClusterCIDRs...)
			continue
		}
		pfx, err := ParseAddress(a)
		if err != nil {
			errs = append(errs, field.Invalid(p, a, err.Error()))
			continue
		}
		out.Prefixes = append(out.Prefixes, pfx)
	}
	out.Prefixes = dedupe(out.Prefixes)
	for i, pr := range e.Ports {
		p := path.Child("ports").Index(i)
		last := pr.Port
		if pr.EndPort != nil {
			last = *pr.EndPort
		}
		switch {
		case pr.Port < 1 || pr.Port > 65535:
			errs = append(errs, field.Invalid(p.Child("port"), pr.Port, "ports are 1 to 65535"))
		case last < pr.Port || last > 65535:
			errs = append(errs, field.Invalid(p.Child("endPort"), last, fmt.Sprintf("must be from port (%d) to 65535", pr.Port)))
		default:
			out.Ports = append(out.Ports, ruleset.PortRange{First: uint16(pr.Port), Last: uint16(last)})
		}
	}
	return out, errs
}

// ParseAddress parses an IPv4 or IPv6 address or CIDR prefix; an address is a
// full-length prefix. A prefix with bits set past its length is an error, since it
// usually means a typo.
func ParseAddress(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not a CIDR prefix: %w", err)
		}
		if p.Masked() != p {
			return netip.Prefix{}, fmt.Errorf("has bits set past the prefix length; did you mean %s?", p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not an IP address or CIDR prefix: %w", err)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("zoned addresses are not supported")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkPatterns(ps []string, path *field.Path, required bool) field.ErrorList {
	var errs field.ErrorList
	if required && len(ps) == 0 {
		errs = append(errs, field.Required(path, "name at least one path pattern"))
	}
	for i, s := range ps {
		if _, err := pattern.Parse(s); err != nil {
			errs = append(errs, field.Invalid(path.Index(i), s, err.Error()))
		}
	}
	return errs
}

func checkEnum[T ~string](vs []T, path *field.Path, required bool, valid []T) field.ErrorList {
	var errs field.ErrorList
	if required && len(vs) == 0 {
		errs = append(errs, field.Required(path, fmt.Sprintf("name at least one of %v", valid)))
	}
	for i, v := range vs {
		if !slices.Contains(valid, v) {
			errs = append(errs, field.NotSupported(path.Index(i), v, valid))
		}
	}
	return errs
}

// sortedSet orders a set as its enum lists values and drops duplicates, so the order a
// policy lists them in does not change the output.
func sortedSet[T comparable](vs []T, order []T) []T {
	var out []T
	for _, v := range order {
		if slices.Contains(vs, v) {
			out = append(out, v)
		}
	}
	return out
}

// dedupe drops repeated values and keeps the first occurrence's order.
func dedupe[T comparable](vs []T) []T {
	var out []T
	for _, v := range vs {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}
