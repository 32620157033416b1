package server

import (
	"context"
	"fmt"
	"log/slog"

	kwhlog "github.com/slok/kubewebhook/v2/pkg/log"
)

// slogger adapts log/slog to kubewebhook's logger.
type slogger struct {
	l *slog.Logger
}

var _ kwhlog.Logger = slogger{}

type ctxKey struct{}

func (s slogger) Infof(format string, args ...any)    { s.l.Debug(fmt.Sprintf(format, args...)) }
func (s slogger) Warningf(format string, args ...any) { s.l.Warn(fmt.Sprintf(format, args...)) }
func (s slogger) Errorf(format string, args ...any)   { s.l.Error(fmt.Sprintf(format, args...)) }
func (s slogger) Debugf(format string, args ...any)   { s.l.Debug(fmt.Sprintf(format, args...)) }

func (s slogger) WithValues(kv kwhlog.Kv) kwhlog.Logger {
	l := s.l
	for k, v := range kv {
		l = l.With(k, v)
	}
	return slogger{l}
}

func (s slogger) WithCtxValues(ctx context.Context) kwhlog.Logger {
	kv, _ := ctx.Value(ctxKey{}).(kwhlog.Kv)
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
