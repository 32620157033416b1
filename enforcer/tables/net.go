package tables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// Linux numbers of the API's socket families, types and protocols.
var (
	families = map[v1alpha1.SocketFamily]uint16{
		"unix": 1, "inet": 2, "inet6": 10, "netlink": 16, "packet": 17, "alg": 38,
		"vsock": 40, "xdp": 44, "bluetooth": 31, "can": 29, "tipc": 30, "rds": 21,
		"llc": 26, "key": 15,
	}
	socketTypes = map[v1alpha1.SocketType]uint16{
		"stream": 1, "dgram": 2, "raw": 3, "rdm": 4, "seqpacket": 5, "packet": 10,
	}
	protocolNumbers = map[v1alpha1.Protocol]uint16{
		"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "udplite": 136,
	}
	// egressProtocols are the protocol slots of struct egress_range (net.h proto_index).
	egressProtocols = map[v1alpha1.Protocol]int{"tcp": 0, "udp": 1, "sctp": 2, "icmp": 3, "icmpv6": 3}
)

func (b *builder) addSocket(s *ruleset.Socket, idx uint16, action Action) error {
	fs, err := numbers(s.Families, families, "socket family")
	if err != nil {
		return err
	}
	ts, err := numbers(s.Types, socketTypes, "socket type")
	if err != nil {
		return err
	}
	ps, err := numbers(s.Protocols, protocolNumbers, "protocol")
	if err != nil {
		return err
	}
	for _, f := range fs {
		for _, t := range ts {
			for _, p := range ps {
				b.sockets = append(b.sockets, sockRule{
					key:  SocketKey{Family: f, Type: t, Protocol: p},
					rule: idx, action: action,
				})
			}
		}
	}
	return nil
}

// numbers maps names to numbers; an empty list is the single value Any.
func numbers[T ~string](names []T, table map[T]uint16, what string) ([]uint16, error) {
	if len(names) == 0 {
		return []uint16{Any}, nil
	}
	var out []uint16
	for _, n := range names {
		v, ok := table[n]
		if !ok {
			return nil, fmt.Errorf("unknown %s %q", what, n)
		}
		out = append(out, v)
	}
	return out, nil
}

func meet(a, b uint16) (uint16, bool) {
	switch {
	case a == Any:
		return b, true
	case b == Any || a == b:
		return a, true
	}
	return 0, false
}

func covers(rule, k SocketKey) bool {
	return (rule.Family == Any || rule.Family == k.Family) &&
		(rule.Type == Any || rule.Type == k.Type) &&
		(rule.Protocol == Any || rule.Protocol == k.Protocol)
}

// finishSockets stores every rule key and every intersection of keys, each with the best
// verdict of the rules covering it. The programs look keys up from the most specific
// (exact family, type, protocol) to the least, so the first key they find is the
// intersection of every stored key matching the socket, whose verdict accounts for every
// rule that matches it.
func (b *builder) finishSockets() error {
	if len(b.sockets) == 0 {
		return nil
	}
	keys := map[SocketKey]bool{}
	var list []SocketKey
	for _, r := range b.sockets {
		if !keys[r.key] {
			keys[r.key] = true
			list = append(list, r.key)
		}
	}
	for i := 0; i < len(list); i++ {
		for j := 0; j < i; j++ {
			f, ok1 := meet(list[i].Family, list[j].Family)
			t, ok2 := meet(list[i].Type, list[j].Type)
			p, ok3 := meet(list[i].Protocol, list[j].Protocol)
			k := SocketKey{Family: f, Type: t, Protocol: p}
			if ok1 && ok2 && ok3 && !keys[k] {
				if len(list) >= 1<<14 {
					return fmt.Errorf("socket rules: more than %d combinations", 1<<14)
				}
				keys[k] = true
				list = append(list, k)
			}
		}
	}
	shapes := uint32(0)
	for _, k := range list {
		shapes |= 1 << SocketShape(k)
		v := Verdict{Rule: RuleNone}
		for _, r := range b.sockets {
			if covers(r.key, k) && better(r.action, v.Action) {
				v = Verdict{Action: r.action, Rule: r.rule}
			}
		}
		b.img.Sockets[k] = v
	}
	b.img.Body.HasSocket = 1 | shapes<<1
	return nil
}

// SocketShape numbers the shape of a socket key, which of its fields are Any, in the
// order socket_verdict looks the shapes up: family, then type, then protocol exact
// before Any. Bit 1+shape of HasSocket says that some key has that shape.
func SocketShape(k SocketKey) uint {
	var s uint
	if k.Family == Any {
		s |= 4
	}
	if k.Type == Any {
		s |= 2
	}
	if k.Protocol == Any {
		s |= 1
	}
	return s
}

func (b *builder) addEgress(e *ruleset.Egress, idx uint16, action Action) error {
	var protos []int
	for _, p := range e.Protocols {
		n, ok := egressProtocols[p]
		if !ok {
			return fmt.Errorf("protocol %q: BPF egress rules tell apart tcp, udp, sctp and icmp/icmpv6 only", p)
		}
		protos = append(protos, n)
	}
	prefixes := e.Prefixes
	if len(prefixes) == 0 {
		prefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	for _, p := range prefixes {
		p = p.Masked()
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return fmt.Errorf("prefix %s: an IPv4-mapped prefix must be at least /96", p)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		b.egress = append(b.egress, egressRule{prefix: p, ports: e.Ports, protos: protos, rule: idx, action: action})
	}
	return nil
}

func contains(outer, inner netip.Prefix) bool {
	return outer.Addr().Is4() == inner.Addr().Is4() && outer.Bits() <= inner.Bits() && outer.Contains(inner.Addr())
}

// finishEgress makes one LPM entry per distinct prefix, holding every rule whose prefix
// contains it: the longest prefix matching an address then carries all the rules that
// apply to the address.
func (b *builder) finishEgress() error {
	if len(b.egress) == 0 {
		return nil
	}
	var prefixes []netip.Prefix
	for _, r := range b.egress {
		if !slices.Contains(prefixes, r.prefix) {
			prefixes = append(prefixes, r.prefix)
		}
	}
	slices.SortFunc(prefixes, func(a, c netip.Prefix) int {
		if d := a.Addr().Compare(c.Addr()); d != 0 {
			return d
		}
		return a.Bits() - c.Bits()
	})
	for _, p := range prefixes {
		var rules []egressRule
		for _, r := range b.egress {
			if contains(r.prefix, p) {
				rules = append(rules, r)
			}
		}
		ports, err := portTable(rules)
		if err != nil {
			var ids []string
			for _, r := range rules {
				if id := b.img.Rules[r.rule]; !slices.Contains(ids, id) {
					ids = append(ids, id)
				}
			}
			return fmt.Errorf("egress rules under %s (%s): %w", p, strings.Join(ids, ", "), err)
		}
		if p.Addr().Is4() {
			b.img.Egress4 = append(b.img.Egress4, EgressEntry{Prefix: p, Ports: ports})
		} else {
			b.img.Egress6 = append(b.img.Egress6, EgressEntry{Prefix: p, Ports: ports})
		}
	}
	b.img.Body.HasEgress = 1
	return nil
}

// portTable cuts the port space at every range boundary of the rules and records, for
// each piece a rule covers, the best verdict per protocol; equal neighbours merge.
func portTable(rules []egressRule) (EgressPorts, error) {
	cuts := []int{0, 65536}
	for _, r := range rules {
		for _, pr := range r.ports {
			cuts = append(cuts, int(pr.First), int(pr.Last)+1)
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out []EgressRange
	for i := 0; i+1 < len(cuts); i++ {
		lo, hi := cuts[i], cuts[i+1]-1
		er := EgressRange{First: uint16(lo), Last: uint16(hi), Rule: [4]uint16{RuleNone, RuleNone, RuleNone, RuleNone}}
		any := false
		for _, r := range rules {
			if !portsCover(r.ports, lo) {
				continue
			}
			for pi := range 4 {
				if len(r.protos) > 0 && !slices.Contains(r.protos, pi) {
					continue
				}
				if better(r.action, er.Action[pi]) {
					er.Action[pi] = r.action
					er.Rule[pi] = r.rule
					any = true
				}
			}
		}
		if !any {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].Last)+1 == lo && out[n-1].Action == er.Action && out[n-1].Rule == er.Rule {
			out[n-1].Last = uint16(hi)
			continue
		}
		out = append(out, er)
	}
	if len(out) > EgressRanges {
		return EgressPorts{}, fmt.Errorf("%d distinct port ranges, the most one prefix holds is %d", len(out), EgressRanges)
	}
	var p EgressPorts
	p.N = uint32(len(out))
	copy(p.Range[:], out)
	return p, nil
}

func portsCover(ranges []ruleset.PortRange, port int) bool {
	if len(ranges) == 0 {
		return true
	}
	for _, r := range ranges {
		if int(r.First) <= port && port <= int(r.Last) {
			return true
		}
	}
	return false
}
