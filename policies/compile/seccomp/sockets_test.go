package seccomp

import (
	"encoding/json"
	"fmt"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/podarmor/podarmor/policies/api/v1alpha1"
	"github.com/podarmor/podarmor/policies/ruleset"
)

// kernelSocket is a reference model of what the kernel makes of socket(family, typ,
// proto) (net/socket.c __sys_socket and __sock_create; net/ipv4/af_inet.c inet_create;
// net/ipv6/af_inet6.c inet6_create): the family, type and protocol of the socket it
// creates, or ok false when it creates none for a reason this model knows.
func kernelSocket(family, typ, proto uint64) (f, t, p uint64, ok bool) {
	f, t, p = family&0xffffffff, typ&sockTypeMask, proto&0xffffffff
	if t == 0 || t > sockPacket {
		return 0, 0, 0, false // type out of range
	}
	if f == afInet && t == sockPacket {
		f = afPacket
	}
	if (f == afInet || f == afInet6) && p == 0 {
		dp, has := defaultProtocol[t]
		if !has {
			return 0, 0, 0, false // no default protocol for the type
		}
		p = dp
	}
	return f, t, p, true
}

// wants reports whether the socket rule m, read as the API defines it, matches a socket
// of family f, type t and protocol p.
func wants(m ruleset.Socket, f, t, p uint64) bool {
	in := func(n uint64, list []uint64) bool {
		if list == nil {
			return true
		}
		for _, x := range list {
			if x == n {
				return true
			}
		}
		return false
	}
	fams, _ := numbers(m.Families, families, "")
	types, _ := numbers(m.Types, sockTypes, "")
	protos, _ := numbers(m.Protocols, protocols, "")
	if protos != nil && f != afInet && f != afInet6 {
		return false // only inet and inet6 sockets have an IP protocol
	}
	return in(f, fams) && in(t, types) && in(p, protos)
}

// filterAction runs a call through a profile as the kernel runs the filter libseccomp
// builds from it, for a 64-bit ABI: the strongest action among the matching entries
// (resolve leaves no two entries of different actions that can both match), and false
// when none matches and the call is allowed.
func filterAction(p specs.LinuxSeccomp, name string, args [6]uint64) (verdict, bool) {
	best, matched := verdict{}, false
	for _, s := range p.Syscalls {
		named := false
		for _, n := range s.Names {
			named = named || n == name
		}
		if !named {
			continue
		}
		all := true
		for _, a := range s.Args {
			all = all && holds(a, args[a.Index])
		}
		if !all {
			continue
		}
		v := verdict{}
		if s.ErrnoRet != nil {
			v.errno = *s.ErrnoRet
		}
		if !matched || v.rank() > best.rank() {
			best, matched = v, true
		}
	}
	return best, matched
}

// TestSocketRulesAreExact runs every combination of interesting socket(2) arguments
// through the rendered profile and checks it against the reference model: a call is
// denied exactly when the socket it would create matches the rule. Calls the kernel
// refuses anyway may go either way.
func TestSocketRulesAreExact(t *testing.T) {
	matches := map[string]ruleset.Socket{
		"every socket":  {},
		"inet sockets":  {Families: []v1alpha1.SocketFamily{"inet"}},
		"inet6 sockets": {Families: []v1alpha1.SocketFamily{"inet6"}},
		"packet sockets, including AF_INET SOCK_PACKET":   {Families: []v1alpha1.SocketFamily{"packet"}},
		"packet sockets of type packet":                   {Families: []v1alpha1.SocketFamily{"packet"}, Types: []v1alpha1.SocketType{"packet"}},
		"inet sockets of type packet, which do not exist": {Families: []v1alpha1.SocketFamily{"inet"}, Types: []v1alpha1.SocketType{"packet"}},
		"alg and vsock sockets":                           {Families: []v1alpha1.SocketFamily{"alg", "vsock"}},
		"tcp sockets":                                     {Protocols: []v1alpha1.Protocol{"tcp"}},
		"inet tcp sockets":                                {Families: []v1alpha1.SocketFamily{"inet"}, Protocols: []v1alpha1.Protocol{"tcp"}},
		"udp and sctp sockets":                            {Protocols: []v1alpha1.Protocol{"udp", "sctp"}},
		"icmp and icmpv6 sockets":                         {Protocols: []v1alpha1.Protocol{"icmp", "icmpv6"}},
		"raw icmp sockets":                                {Types: []v1alpha1.SocketType{"raw"}, Protocols: []v1alpha1.Protocol{"icmp"}},
		"stream udplite sockets":                          {Types: []v1alpha1.SocketType{"stream"}, Protocols: []v1alpha1.Protocol{"udplite"}},
		"raw sockets":                                     {Types: []v1alpha1.SocketType{"raw"}},
		"unix and netlink datagram sockets":               {Families: []v1alpha1.SocketFamily{"unix", "netlink"}, Types: []v1alpha1.SocketType{"dgram", "seqpacket"}},
		"unix tcp sockets, which do not exist":            {Families: []v1alpha1.SocketFamily{"unix"}, Protocols: []v1alpha1.Protocol{"tcp"}},
		"inet6 seqpacket sctp sockets":                    {Families: []v1alpha1.SocketFamily{"inet6"}, Types: []v1alpha1.SocketType{"seqpacket"}, Protocols: []v1alpha1.Protocol{"sctp"}},
	}
	const garbage = 0xdead_0000_0000 // upper-half bits the kernel drops from int arguments
	var famArgs []uint64
	for _, f := range []uint64{0, afUnix, afInet, afInet6, afKey, afNetlink, afPacket, afALG, afVsock, afXDP, 99} {
		famArgs = append(famArgs, f, f|garbage)
	}
	var typeArgs []uint64
	for t := uint64(0); t <= 15; t++ {
		typeArgs = append(typeArgs, t, t|0o4000|0o2000000) // SOCK_NONBLOCK | SOCK_CLOEXEC
	}
	protoArgs := []uint64{0, ipprotoICMP, ipprotoTCP, ipprotoUDP, ipprotoICMPv6, ipprotoSCTP, ipprotoUDPLite, 3, 255, ipprotoTCP | garbage}

	b := newBackend(t, noI386...)
	for name, m := range matches {
		for _, action := range []v1alpha1.Action{enforce, audit} {
			t.Run(fmt.Sprintf("%s %s", action, name), func(t *testing.T) {
				out, err := b.Render(&ruleset.RuleSet{ProfileID: "s", Default: ruleset.Allow, Rules: []ruleset.Rule{sock("r", action, m)}})
				if err != nil {
					t.Fatal(err)
				}
				var p specs.LinuxSeccomp
				if err := json.Unmarshal(out, &p); err != nil {
					t.Fatal(err)
				}
				want := verdict{errno: errnoEPERM}
				if action == audit {
					want = logged
				}
				for _, call := range socketCalls {
					for _, fa := range famArgs {
						for _, ta := range typeArgs {
							for _, pa := range protoArgs {
								f, ty, pr, ok := kernelSocket(fa, ta, pa)
								if !ok {
									continue
								}
								got, matched := filterAction(p, call, [6]uint64{fa, ta, pa})
								if should := wants(m, f, ty, pr); should != (matched && got == want) {
									t.Fatalf("%s(%#x, %#x, %#x) makes a (%d, %d, %d) socket: filter matched=%v with %+v, want matched=%v\n%s",
										call, fa, ta, pa, f, ty, pr, matched, got, should, out)
								}
							}
						}
					}
				}
			})
		}
	}
}
