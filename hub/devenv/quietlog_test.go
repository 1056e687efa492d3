package devenv

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestFirstStartQuiet(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level slog.Level
		log   func(*slog.Logger)
		want  string // "" means nothing is written
	}{
		{"nothing saved yet, info", slog.LevelInfo, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("key not found"), "key", "SYS")
		}, ""},
		{"nothing saved yet, debug", slog.LevelDebug, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("key not found"), "key", "SYS")
		}, "level=DEBUG"},
		{"a real storage error", slog.LevelInfo, func(l *slog.Logger) {
			l.Error("failed to get data", "error", errors.New("database not open"))
		}, "level=ERROR"},
		{"other errors", slog.LevelInfo, func(l *slog.Logger) {
			l.Error("listener failed", "error", errors.New("key not found"))
		}, "level=ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			l := slog.New(firstStartQuiet{slog.NewTextHandler(&b, &slog.HandlerOptions{Level: tc.level})}).With("component", "mqtt-broker")
			tc.log(l)
			got := b.String()
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Errorf("logged %q, want %q", got, tc.want)
			}
		})
	}
}
