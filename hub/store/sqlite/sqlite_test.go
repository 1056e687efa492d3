package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/hub/store/storetest"
)

// MustOpen opens a store at path, closed when the test ends.
func MustOpen(tb testing.TB, path string) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return MustOpen(t, filepath.Join(t.TempDir(), "hub.db"))
	})
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	storetest.RunReopen(t, func(t *testing.T, name string) store.Store {
		return MustOpen(t, filepath.Join(dir, name+".db"))
	})
}
