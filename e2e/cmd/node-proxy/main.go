// Command node-proxy is the HTTP CONNECT proxy that runs on the local cluster's node VM
// (docs/local-cluster.md), in the node's network namespace. It is how the kube-apiserver
// on the host reaches into the VM, whose user-mode network lets nothing in but QEMU's
// host forwards: kubectl exec and logs (the kubelet on the node's address), webhooks and
// other services served by pods (a pod or Service address). kube-apiserver's egress
// selector sends such connections to it as HTTP CONNECT requests, through a host relay
// and a QEMU hostfwd to this proxy's port.
//
//	podarmor-node-proxy -listen :8132 -allow 10.244.0.0/24,10.96.0.0/16
//
// For each CONNECT host:port request it resolves host (the node's /etc/hosts knows its
// own name), checks the address, dials it, answers "200 Connection established" and
// copies bytes both ways until both sides have ended. An address is allowed when it is in
// one of the -allow prefixes (the pod and service CIDRs) or is one of the node's own
// non-loopback interface addresses at the time of the request; anything else (the
// host's forward addresses, QEMU's gateway, loopback, anything outside) is refused with
// 403, as is every method but CONNECT (405). Every request is logged to stderr with its
// outcome.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8132", "address to listen on")
	allow := flag.String("allow", "", "comma-separated CIDRs the proxy may connect to besides the node's own addresses, e.g. the pod and service CIDRs")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "node-proxy: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	prefixes, err := parsePrefixes(*allow)
	if err != nil {
		fmt.Fprintln(os.Stderr, "node-proxy: -allow:", err)
		os.Exit(2)
	}
	logger := log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
	p := &proxy{allowed: prefixes, localAddrs: interfaceAddrs, log: logger}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Fatal(err)
	}
	logger.Printf("listening on %s; allowed: %s and the node's own addresses", ln.Addr(), *allow)
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		logger.Fatal(err)
	}
}

// parsePrefixes parses a comma-separated list of CIDRs; an empty list is allowed.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.244.0.0/24", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// interfaceAddrs returns the addresses of the node's interfaces but loopback's.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok || ip.Unmap().IsLoopback() {
			continue
		}
		out = append(out, ip.Unmap())
	}
	return out, nil
}

type proxy struct {
	allowed    []netip.Prefix
	localAddrs func() ([]netip.Addr, error)
	log        *log.Logger
	// resolve looks host up; nil means net.DefaultResolver.
	resolve func(ctx context.Context, host string) ([]netip.Addr, error)
}

// check returns the address to dial for target (host:port), or why it is refused.
func (p *proxy) check(ctx context.Context, target string) (netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(target)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("target %q is not host:port", target)
	}
	port, err := net.LookupPort("tcp", portStr)
	if err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("target %q: bad port", target)
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip.Unmap()}
	} else {
		resolve := p.resolve
		if resolve == nil {
			resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
			}
		}
		addrs, err = resolve(ctx, host)
		if err != nil || len(addrs) == 0 {
			return netip.AddrPort{}, fmt.Errorf("target %q: cannot resolve %s: %v", target, host, err)
		}
	}
	local, err := p.localAddrs()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("list the node's addresses: %w", err)
	}
	for _, a := range addrs {
		a = a.Unmap()
		if p.allowedAddr(a, local) {
			return netip.AddrPortFrom(a, uint16(port)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("target %q (%v) is outside the node: not in %v and not one of the node's addresses %v", target, addrs, p.allowed, local)
}

func (p *proxy) allowedAddr(a netip.Addr, local []netip.Addr) bool {
	for _, l := range local {
		if a == l {
			return true
		}
	}
	for _, pr := range p.allowed {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		p.log.Printf("%s: refused %s %s: only CONNECT is served", r.RemoteAddr, r.Method, r.RequestURI)
		http.Error(w, "only CONNECT is served", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	dst, err := p.check(ctx, r.Host)
	if err != nil {
		p.log.Printf("%s: refused CONNECT %s: %v", r.RemoteAddr, r.Host, err)
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	var d net.Dialer
	upstream, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		p.log.Printf("%s: CONNECT %s (%s): %v", r.RemoteAddr, r.Host, dst, err)
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer upstream.Close()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "connection cannot be taken over", http.StatusInternalServerError)
		return
	}
	client, buf, err := hj.Hijack()
	if err != nil {
		p.log.Printf("%s: CONNECT %s: hijack: %v", r.RemoteAddr, r.Host, err)
		return
	}
	defer client.Close()
	start := time.Now()
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		p.log.Printf("%s: CONNECT %s: %v", r.RemoteAddr, r.Host, err)
		return
	}
	p.log.Printf("%s: CONNECT %s (%s) established", r.RemoteAddr, r.Host, dst)
	up, down := splice(client, buf.Reader, upstream)
	p.log.Printf("%s: CONNECT %s (%s) closed after %s, %d bytes up, %d down", r.RemoteAddr, r.Host, dst,
		time.Since(start).Round(time.Millisecond), up, down)
}

// splice copies the client's bytes (first those already buffered in br) to upstream and
// upstream's to the client, passing each side's end of writing on to the other, until
// both directions have ended; it returns the bytes sent each way.
func splice(client net.Conn, br *bufio.Reader, upstream net.Conn) (up, down int64) {
	var wg sync.WaitGroup
	wg.Go(func() {
		up, _ = io.Copy(upstream, io.MultiReader(io.LimitReader(br, int64(br.Buffered())), client))
		closeWrite(upstream)
	})
	down, _ = io.Copy(client, upstream)
	closeWrite(client)
	wg.Wait()
	return up, down
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}
