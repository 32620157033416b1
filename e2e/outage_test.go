package e2e

import (
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/podarmor/podarmor/e2e/framework"
	"github.com/podarmor/podarmor/e2e/vm"
)

// outageSwitchInVM is where the guest flips the switch of its path to the API server.
var outageSwitchInVM = vm.ForwardIP + ":6444"

// TestEnforcerAPIServerOutage runs the enforcer's Kubernetes mode in a VM on each kernel
// series with the API server behind a switch the guest flips, for 30 s. On 6.1 the
// switch cuts the network path: every connection is closed and new ones are closed at
// once. On 6.12 it stops kube-apiserver and starts it again on the same port and etcd
// (one kind of outage per kernel keeps the test to two VMs).
// enforcer/kube/outage_guest_test.go says what is checked during and after.
func TestEnforcerAPIServerOutage(t *testing.T) {
	vm.Require(t)
	version := framework.Versions(t)[0]
	bin := vm.BuildGoTest(t, vm.GoTest{
		Package:  "../enforcer/kube",
		Tags:     []string{"netgo", "osusergo"},
		BuildEnv: []string{"CGO_ENABLED=1"},
		LDFlags:  "-extldflags -static",
	})
	for _, series := range vm.Series() {
		t.Run(series, func(t *testing.T) {
			t.Parallel()
			cp := framework.StartControlPlane(t, framework.Options{Version: version})
			ns := cp.CreateNamespace(t, nil)
			sw := newCutSwitch(t, hostOf(t, cp.Config.Host))
			if series != "6.1" {
				sw.stop = func() error { cp.StopAPIServer(t); return nil }
				sw.start = func() error { return cp.StartAPIServer(t) }
			}
			vm.RunGoTest(t, series, vm.GoTest{
				Binary: bin,
				Args:   []string{"-test.run=^TestAPIServerOutage$"},
				Env: []string{"PODARMOR_TEST_KUBECONFIG=/etc/podarmor/kubeconfig", "PODARMOR_TEST_NAMESPACE=" + ns.Name,
					"PODARMOR_TEST_OUTAGE_URL=http://" + outageSwitchInVM},
				Files: []vm.File{{Source: guestKubeconfig(t, cp.Kubeconfig), Path: "/etc/podarmor/kubeconfig"}},
				Forwards: []vm.Forward{
					{GuestAddr: apiServerInVM, Host: sw.proxy},
					{GuestAddr: outageSwitchInVM, Host: sw.control},
				},
				MemoryMiB: 2048,
				Timeout:   10 * time.Minute,
			})
			sw.mu.Lock()
			cuts, refused := sw.cuts, sw.refused
			sw.mu.Unlock()
			if cuts != 1 || refused == 0 {
				t.Errorf("the switch was cut %d times and refused %d connections; want one cut that refused some", cuts, refused)
			}
			t.Logf("during the outage %d connections were refused", refused)
		})
	}
}

// cutSwitch is a TCP proxy to the API server (proxy) with an HTTP switch (control):
// GET /cut closes every proxied connection and, until GET /restore, closes new ones as
// soon as they are accepted. With stop and start set, GET /cut calls stop instead (the
// API server goes away) and GET /restore calls start.
type cutSwitch struct {
	target, proxy, control string
	stop, start            func() error

	mu      sync.Mutex
	cut     bool
	conns   map[net.Conn]bool
	cuts    int
	refused int
}

func newCutSwitch(t *testing.T, target string) *cutSwitch {
	t.Helper()
	s := &cutSwitch{target: target, conns: map[net.Conn]bool{}}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.proxy, s.control = pl.Addr().String(), cl.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cut", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.cuts++
		if s.stop != nil {
			s.mu.Unlock()
			if err := s.stop(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t.Log("kube-apiserver stopped")
			return
		}
		defer s.mu.Unlock()
		s.cut = true
		for c := range s.conns {
			c.Close()
		}
		t.Logf("API server cut off (%d connections closed)", len(s.conns))
	})
	mux.HandleFunc("GET /restore", func(w http.ResponseWriter, r *http.Request) {
		if s.start != nil {
			start := time.Now()
			if err := s.start(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			t.Logf("kube-apiserver started again, ready in %v", time.Since(start).Round(time.Millisecond))
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cut = false
		t.Log("API server reachable again")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(cl)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := pl.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() {
		pl.Close()
		srv.Close()
		<-done
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

// serve relays one connection unless the switch is cut.
func (s *cutSwitch) serve(c net.Conn) {
	s.mu.Lock()
	if s.cut {
		s.refused++
		s.mu.Unlock()
		c.Close()
		return
	}
	s.mu.Unlock()
	up, err := net.Dial("tcp", s.target)
	if err != nil { // the API server is stopped
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		c.Close()
		return
	}
	s.mu.Lock()
	if s.cut { // cut while dialling
		s.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	s.conns[c], s.conns[up] = true, true
	s.mu.Unlock()
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		// EOF, a reset or the switch's Close: either way the relay ends.
		_, _ = io.Copy(dst, src)
		dst.Close()
		src.Close()
	}
	wg.Add(2)
	go pipe(up, c)
	go pipe(c, up)
	wg.Wait()
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.conns, up)
	s.mu.Unlock()
}
