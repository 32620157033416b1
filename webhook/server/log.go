package server

import (
	"context"
	"fmt"
	"log/slog"

	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
)

// slogger adapts log/slog to kubewebhook's logger. kubewebhook attaches key-values to
// every request; they are only turned into slog attributes when a record is actually
// logged, which keeps the admission path free of logging work at the usual levels.
type slogger struct {
	l  *slog.Logger
	kv []kwhlog.Kv
}

var _ kwhlog.Logger = slogger{}

type ctxKey struct{}

// kubewebhook's Infof is per-request chatter; it goes to Debug.
func (s slogger) Infof(format string, args ...any)    { s.log(slog.LevelDebug, format, args) }
func (s slogger) Warningf(format string, args ...any) { s.log(slog.LevelWarn, format, args) }
func (s slogger) Errorf(format string, args ...any)   { s.log(slog.LevelError, format, args) }
func (s slogger) Debugf(format string, args ...any)   { s.log(slog.LevelDebug, format, args) }

func (s slogger) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !s.l.Enabled(ctx, level) {
		return
	}
	var attrs []any
	for _, kv := range s.kv {
		for k, v := range kv {
			attrs = append(attrs, k, v)
		}
	}
	s.l.Log(ctx, level, fmt.Sprintf(format, args...), attrs...)
}

func (s slogger) WithValues(kv kwhlog.Kv) kwhlog.Logger {
	return slogger{l: s.l, kv: append(s.kv[:len(s.kv):len(s.kv)], kv)}
}

func (s slogger) WithCtxValues(ctx context.Context) kwhlog.Logger {
	kv, _ := ctx.Value(ctxKey{}).(kwhlog.Kv)
	if kv == nil {
		return s
	}
	return s.WithValues(kv)
}

func (s slogger) SetValuesOnCtx(parent context.Context, values kwhlog.Kv) context.Context {
	merged := kwhlog.Kv{}
	if kv, ok := parent.Value(ctxKey{}).(kwhlog.Kv); ok {
		for k, v := range kv {
			merged[k] = v
		}
	}
	for k, v := range values {
		merged[k] = v
	}
	return context.WithValue(parent, ctxKey{}, merged)
}
