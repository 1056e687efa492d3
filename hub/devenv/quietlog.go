package devenv

import (
	"context"
	"log/slog"
	"strings"
)

// firstStartQuiet is a slog.Handler that logs mochi's "failed to get data"
// error at debug level when its cause is "key not found": the persistence
// hook has nothing saved yet, as on every first start, which is no failure.
// Everything else passes through unchanged.
type firstStartQuiet struct{ slog.Handler }

func (h firstStartQuiet) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelError && r.Message == "failed to get data" && notFound(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h firstStartQuiet) WithAttrs(as []slog.Attr) slog.Handler {
	return firstStartQuiet{h.Handler.WithAttrs(as)}
}

func (h firstStartQuiet) WithGroup(name string) slog.Handler {
	return firstStartQuiet{h.Handler.WithGroup(name)}
}

func notFound(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" && strings.Contains(a.Value.String(), "key not found") {
			found = true
			return false
		}
		return true
	})
	return found
}
