package vm

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The guest's network, in a VM with forwards: QEMU's user-mode network 10.0.2.0/24, in
// which the guest is GuestIP. Nothing but the forwards answers there.
const (
	// GuestIP is the guest's address on eth0.
	GuestIP = "10.0.2.15"
	// ForwardIP is the address to give a forward when any will do, "10.0.2.100":
	// Forward{GuestAddr: ForwardIP + ":6443", Host: ...}.
	ForwardIP = "10.0.2.100"
)

// guestNet is the user-mode network's prefix, which QEMU's guestfwd addresses must lie in.
var guestNet = netip.MustParsePrefix("10.0.2.0/24")

// reservedGuestIPs are the addresses of the guest's network that a forward cannot have:
// the network and broadcast addresses, QEMU's gateway (10.0.2.2, its host address, which
// restrict=on closes) and DNS server (10.0.2.3, closed too), and the guest's own.
var reservedGuestIPs = map[string]string{
	"10.0.2.0":   "the network's address",
	"10.0.2.2":   "QEMU's gateway",
	"10.0.2.3":   "QEMU's DNS server",
	GuestIP:      "the guest's own address",
	"10.0.2.255": "the broadcast address",
}

// Forward lets the guest reach one TCP port on the host's loopback: a connection the
// guest opens to GuestAddr is relayed to Host. See Config.Forwards.
type Forward struct {
	// GuestAddr is the IPv4 address and port the guest connects to, e.g.
	// "10.0.2.100:6443" (ForwardIP): an address of the guest's network 10.0.2.0/24
	// other than 10.0.2.0, .2 (QEMU's gateway), .3 (its DNS server), .15 (GuestIP) and
	// .255. Forwards may share an address, not an address and port.
	GuestAddr string
	// Host is the address and port on the host's loopback that the connection reaches,
	// e.g. "127.0.0.1:41234": an IP in 127.0.0.0/8 or [::1], no name. Nothing needs to
	// listen there when the VM starts; a guest connection made while nothing does is
	// accepted by QEMU and closed at once (the guest sees EOF, not a refusal).
	Host string
}

func (f Forward) String() string { return f.GuestAddr + "->" + f.Host }

// validate checks one forward and returns its guest address and port.
func (f Forward) validate() (netip.AddrPort, error) {
	guest, err := netip.ParseAddrPort(f.GuestAddr)
	if err != nil || !guest.Addr().Is4() || guest.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("forward %s: guest address %q is not an IPv4 address and port such as %s:6443", f, f.GuestAddr, ForwardIP)
	}
	if !guestNet.Contains(guest.Addr()) {
		return netip.AddrPort{}, fmt.Errorf("forward %s: guest address %s is outside the guest's network %s", f, guest.Addr(), guestNet)
	}
	if what, ok := reservedGuestIPs[guest.Addr().String()]; ok {
		return netip.AddrPort{}, fmt.Errorf("forward %s: guest address %s is %s", f, guest.Addr(), what)
	}
	host, err := netip.ParseAddrPort(f.Host)
	if err != nil || host.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("forward %s: host address %q is not an IP and port such as 127.0.0.1:6443", f, f.Host)
	}
	if !host.Addr().Unmap().IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("forward %s: host address %s is not on the loopback (127.0.0.0/8 or ::1)", f, host.Addr())
	}
	return guest, nil
}

// validateForwards checks every forward, and that no two have the same guest address
// and port.
func validateForwards(fwds []Forward) error {
	seen := map[netip.AddrPort]Forward{}
	for _, f := range fwds {
		guest, err := f.validate()
		if err != nil {
			return err
		}
		if other, ok := seen[guest]; ok {
			return fmt.Errorf("forwards %s and %s have the same guest address", other, f)
		}
		seen[guest] = f
	}
	return nil
}

// guestNetConf is /podarmor/net, which /init sources when the VM has forwards: the
// modules of the network device in the order to load them, and the guest's address.
const guestNetConf = "/podarmor/net"

// netFiles returns the files that give the guest its network device: the modules kept
// beside kernel by hack/vm-kernels.sh (modules-RELEASE/, in the order its `order` file
// lists), at /lib/modules/RELEASE/, and /podarmor/net for /init.
func netFiles(kernel string) ([]File, error) {
	base := filepath.Base(kernel)
	release, ok := strings.CutPrefix(base, "vmlinux-")
	if !ok {
		release, ok = strings.CutPrefix(base, "vmlinuz-")
	}
	if !ok || release == "" {
		return nil, fmt.Errorf("forwards need the kernel's network modules, found by the kernel's name vmlinux-RELEASE or vmlinuz-RELEASE; %s is neither", kernel)
	}
	dir := filepath.Join(filepath.Dir(kernel), "modules-"+release)
	order, err := os.ReadFile(filepath.Join(dir, "order"))
	if err != nil {
		return nil, fmt.Errorf("forwards need the network modules of kernel %s, which hack/vm-kernels.sh keeps beside it: %w", release, err)
	}
	var files []File
	var guestPaths []string
	for name := range strings.FieldsSeq(string(order)) {
		if name != filepath.Base(name) || !strings.HasSuffix(name, ".ko") {
			return nil, fmt.Errorf("%s/order: %q is not a module file name", dir, name)
		}
		p := path.Join("/lib/modules", release, name)
		files = append(files, File{Path: p, Source: filepath.Join(dir, name), Mode: 0o644})
		guestPaths = append(guestPaths, p)
	}
	conf := fmt.Sprintf("PODARMOR_NET_MODULES=%s\nPODARMOR_NET_ADDR=%s\n",
		shellQuote(strings.Join(guestPaths, " ")), shellQuote(GuestIP+"/"+strconv.Itoa(guestNet.Bits())))
	return append(files, File{Path: guestNetConf, Data: []byte(conf)}), nil
}

// netArgs are QEMU's arguments for the guest's network: a virtio NIC without an option
// ROM (nothing boots from it) on a user-mode network with restrict=on, where the guest
// reaches nothing but the guestfwd rules, one per forward. Each rule runs busybox nc
// for every connection the guest opens, with the connection as its stdin and stdout,
// and nc connects to the relay of that forward on the host's loopback (relayPorts, in
// the order of fwds).
//
// The rules use guestfwd's cmd: form. Its other form, guestfwd=tcp:IP:PORT-tcp:HOST:PORT,
// makes a chardev: QEMU 7.2 connects it once, when it starts (and refuses to start when
// nothing listens), and carries every guest connection to that rule over the one
// connection, which fits no client that reconnects or opens two.
func netArgs(fwds []Forward, busybox string, relayPorts []int) []string {
	return netArgsWith(fwds, nil, busybox, relayPorts)
}

// netArgsWith is netArgs with hostfwd rules besides (a Machine's HostForwards): a
// connection to a port on the host's loopback reaches a port of the guest, which
// restrict=on allows, since the host opens it.
func netArgsWith(fwds []Forward, hostFwds []HostForward, busybox string, relayPorts []int) []string {
	netdev := []string{"user", "id=net0", "restrict=on", "ipv6=off"}
	for _, h := range hostFwds {
		netdev = append(netdev, fmt.Sprintf("hostfwd=tcp:%s-:%d", h.Host, h.GuestPort))
	}
	for i, f := range fwds {
		// libslirp splits the command into words as a shell would (no shell runs it);
		// QEMU's option syntax takes ",," for a comma.
		cmd := fmt.Sprintf("%s nc 127.0.0.1 %d", shellQuote(busybox), relayPorts[i])
		netdev = append(netdev, fmt.Sprintf("guestfwd=tcp:%s-cmd:%s", f.GuestAddr, strings.ReplaceAll(cmd, ",", ",,")))
	}
	return []string{
		"-netdev", strings.Join(netdev, ","),
		"-device", "virtio-net-pci,netdev=net0,romfile=",
	}
}

// relay accepts the connections that QEMU's nc processes make for one forward and
// relays each to the forward's host address. It exists so that every connection ends
// with the VM: nc runs detached from QEMU (libslirp spawns it that way), and a guest
// connection open at power-off would otherwise leave nc connected to the host's
// listener for as long as that listener keeps the connection.
type relay struct {
	fwd  Forward
	ln   net.Listener
	note func(string)

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// ServeRelay relays every connection accepted on ln to the TCP address host, as a
// forward's relay does, until the returned function is called, which closes ln, ends the
// open connections and waits for them. note receives a line for each connection that
// could not be relayed. A node VM's runner uses it to offer the guest's proxy port (a
// HostForward) on a unix socket.
func ServeRelay(ln net.Listener, host string, note func(string)) (stop func()) {
	r := &relay{fwd: Forward{GuestAddr: ln.Addr().String(), Host: host}, ln: ln, note: note, conns: map[net.Conn]bool{}}
	r.wg.Go(r.serve)
	return r.close
}

// startRelays starts a relay for each forward on a free port of 127.0.0.1. note
// receives a line for each connection that could not be relayed.
func startRelays(fwds []Forward, note func(string)) ([]*relay, error) {
	var relays []*relay
	for _, f := range fwds {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeRelays(relays)
			return nil, fmt.Errorf("relay of forward %s: %w", f, err)
		}
		r := &relay{fwd: f, ln: ln, note: note, conns: map[net.Conn]bool{}}
		r.wg.Go(r.serve)
		relays = append(relays, r)
	}
	return relays, nil
}

func (r *relay) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *relay) serve() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		if !r.track(c) {
			c.Close()
			return
		}
		r.wg.Go(func() { r.relay(c) })
	}
}

// track records an open connection, so that close ends it; it returns false once the
// relay is closed.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = true
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
}

// relay copies between the guest's connection (through nc) and the host address,
// passing each side's end of writing on to the other, until both have ended.
func (r *relay) relay(guest net.Conn) {
	defer r.untrack(guest)
	defer guest.Close()
	host, err := net.DialTimeout("tcp", r.fwd.Host, 10*time.Second)
	if err != nil {
		r.note(fmt.Sprintf("vm: forward %s: a guest connection was closed at once: %v", r.fwd, err))
		return
	}
	if !r.track(host) {
		host.Close()
		return
	}
	defer r.untrack(host)
	defer host.Close()
	var wg sync.WaitGroup
	wg.Go(func() { pipe(host, guest) })
	pipe(guest, host)
	wg.Wait()
}

// pipe copies from src to dst until src ends, then ends dst's writing.
func pipe(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
		return
	}
	// A failed copy ends both directions.
	dst.Close()
	src.Close()
}

// close stops accepting, ends every open connection and waits for the relay's
// goroutines.
func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.ln.Close()
	r.wg.Wait()
}

func closeRelays(relays []*relay) {
	for _, r := range relays {
		r.close()
	}
}
