package seccomp

import (
	"errors"
	"fmt"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/ruleset"
)

// socketCalls are the system calls that create sockets from a family, type and protocol
// in their first three arguments. socketpair(2) fails for most families, which is fine:
// denying a call that would fail anyway changes nothing.
var socketCalls = []string{"socket", "socketpair"}

// sockets expresses a socket rule as comparisons of socket(2)'s arguments. A socket of
// the rule is one whose family, type and protocol are each in the rule's lists (an empty
// list is any), where the family, type and protocol are what the kernel makes of the
// call's arguments:
//
//   - the type is the argument's low four bits; the others are SOCK_NONBLOCK and
//     SOCK_CLOEXEC;
//   - socket(AF_INET, SOCK_PACKET, p) makes an AF_PACKET socket (__sock_create);
//   - a protocol is an IP protocol, so only inet and inet6 sockets have one, and protocol 0
//     asks inet and inet6 for their default, per type (see defaultProtocol).
//
// Calls the kernel refuses (an unknown type, a raw inet socket with protocol 0) may match
// too: they fail either way.
func (b *Backend) sockets(s *ruleset.Socket, v verdict) ([]entry, error) {
	if len(s.Families) == 0 && len(s.Types) == 0 && len(s.Protocols) == 0 {
		// Every socket. On i386 libseccomp also denies socketcall(SYS_SOCKET) and
		// socketcall(SYS_SOCKETPAIR), so no path is left open.
		return []entry{{names: slices.Clone(socketCalls), verdict: v}}, nil
	}
	if b.socketcall {
		return nil, errors.New("seccomp cannot match socket families, types or protocols while the profile filters the i386 ABI: there socketcall(2) creates sockets from arguments in memory, and libseccomp turns such a rule into a socketcall(SYS_SOCKET) rule without the family comparison")
	}
	fams, err := numbers(s.Families, families, "socket family")
	if err != nil {
		return nil, err
	}
	types, err := numbers(s.Types, sockTypes, "socket type")
	if err != nil {
		return nil, err
	}
	protos, err := numbers(s.Protocols, protocols, "protocol")
	if err != nil {
		return nil, err
	}

	var conds [][]specs.LinuxSeccompArg
	add := func(args ...specs.LinuxSeccompArg) { conds = append(conds, args) }
	switch {
	case len(protos) > 0:
		// Only inet and inet6 sockets have an IP protocol.
		ipFams := []uint64{afInet, afInet6}
		if len(fams) > 0 {
			ipFams = slices.DeleteFunc(slices.Clone(fams), func(f uint64) bool { return f != afInet && f != afInet6 })
		}
		for _, f := range ipFams {
			for _, p := range protos {
				for _, t := range typeConds(f, types) {
					add(slices.Concat([]specs.LinuxSeccompArg{int32Eq(0, f)}, t, []specs.LinuxSeccompArg{int32Eq(2, p)})...)
				}
			}
			for _, t := range []uint64{sockStream, sockDgram, sockSeqpacket} {
				if slices.Contains(protos, defaultProtocol[t]) && (len(types) == 0 || slices.Contains(types, t)) {
					add(int32Eq(0, f), maskedEq(1, sockTypeMask, t), int32Eq(2, 0))
				}
			}
		}
	case len(fams) > 0:
		for _, f := range fams {
			for _, t := range typeConds(f, types) {
				add(slices.Concat([]specs.LinuxSeccompArg{int32Eq(0, f)}, t)...)
			}
			if f == afPacket && (len(types) == 0 || slices.Contains(types, sockPacket)) {
				add(int32Eq(0, afInet), maskedEq(1, sockTypeMask, sockPacket))
			}
		}
	default:
		// Types alone: the family does not change a socket's type.
		for _, t := range types {
			add(maskedEq(1, sockTypeMask, t))
		}
	}
	es := make([]entry, 0, len(conds))
	for _, c := range conds {
		es = append(es, entry{names: slices.Clone(socketCalls), args: c, verdict: v})
	}
	return es, nil
}

// typeConds returns the type comparisons, alternatives of each other, that select the
// given types (or any, when types is empty) in family f. An AF_INET call of type
// SOCK_PACKET makes a packet socket, so inet leaves SOCK_PACKET out; "any type but 10"
// takes four comparisons, one per bit that can differ from 0b1010.
func typeConds(f uint64, types []uint64) [][]specs.LinuxSeccompArg {
	if len(types) == 0 {
		if f != afInet {
			return [][]specs.LinuxSeccompArg{nil}
		}
		var conds [][]specs.LinuxSeccompArg
		for bit := uint64(1); bit <= 8; bit <<= 1 {
			conds = append(conds, []specs.LinuxSeccompArg{maskedEq(1, bit, ^uint64(sockPacket)&bit)})
		}
		return conds
	}
	var conds [][]specs.LinuxSeccompArg
	for _, t := range types {
		if f == afInet && t == sockPacket {
			continue
		}
		conds = append(conds, []specs.LinuxSeccompArg{maskedEq(1, sockTypeMask, t)})
	}
	return conds
}

// numbers maps names to their kernel numbers, in the order given and without repeats.
func numbers[N ~string](names []N, table map[N]uint64, what string) ([]uint64, error) {
	var out []uint64
	for _, n := range names {
		num, ok := table[n]
		if !ok {
			return nil, fmt.Errorf("unknown %s %q", what, n)
		}
		if !slices.Contains(out, num) {
			out = append(out, num)
		}
	}
	return out, nil
}
