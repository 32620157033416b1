// Command demo-app is the workload of `make demo` (localhost/podarmor/demo-app): a small
// HTTP server that serves a page on / and "ok" on /healthz, so that the demo can show the
// application still serving while podarmor denies the attacks run inside its container.
//
//	demo-app [--listen :8080]
//
// It stops on SIGTERM or SIGINT, after the requests in flight.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "the address to serve HTTP on")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, *listen, newHandler(hostname()), log); err != nil {
		log.Error("serve", "error", err)
		os.Exit(1)
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

// serve serves h on addr until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving", "address", addr)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><title>podarmor demo app</title></head>
<body>
<h1>podarmor demo app</h1>
<p>Served by pod <code>{{.Host}}</code> at {{.Time}}.</p>
<p>This application keeps serving while podarmor denies what an attacker tries inside its container.</p>
</body></html>
`))

// newHandler serves the page on / and the health check on /healthz.
func newHandler(host string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		data := struct{ Host, Time string }{host, time.Now().UTC().Format(time.RFC3339)}
		if err := page.Execute(w, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}
