package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
)

// appArmorFieldSince is the first Kubernetes version with securityContext.appArmorProfile.
var appArmorFieldSince = version.MustParseGeneric("1.30.0")

// serverVersion tracks whether the API server has the AppArmor field; it is re-read
// periodically, since the control plane can be upgraded under a running webhook.
type serverVersion struct {
	kube  kubernetes.Interface
	log   *slog.Logger
	field atomic.Bool
}

func (v *serverVersion) refresh() error {
	info, err := v.kube.Discovery().ServerVersion()
	if err != nil {
		return fmt.Errorf("read the API server's version: %w", err)
	}
	parsed, err := version.ParseGeneric(info.GitVersion)
	if err != nil {
		return fmt.Errorf("parse the API server's version %q: %w", info.GitVersion, err)
	}
	v.field.Store(parsed.AtLeast(appArmorFieldSince))
	return nil
}

func (v *serverVersion) appArmorField() bool { return v.field.Load() }

func (v *serverVersion) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := v.refresh(); err != nil {
				v.log.Warn("re-read API server version", "error", err)
			}
		}
	}
}
