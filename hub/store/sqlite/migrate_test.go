package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/hub/store"
)

func mustOpen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		s := mustOpen(t, path)
		v, err := s.SchemaVersion(t.Context())
		if err != nil || v != len(ms) {
			t.Fatalf("SchemaVersion = %d, %v; want %d", v, err, len(ms))
		}
		var rows int
		if err := s.r.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM migrations`).Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if rows != len(ms) {
			t.Fatalf("migrations table has %d rows, want %d (each applied once)", rows, len(ms))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := mustOpen(t, path)
	if _, err := s.w.ExecContext(t.Context(), `INSERT INTO migrations (version, name, applied) VALUES (999, '0999_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(t.Context(), path)
	if err == nil || !strings.Contains(err.Error(), "newer hub") {
		t.Fatalf("Open of a database from a newer hub: %v; want an error saying so", err)
	}
}

func TestOpenRefusesBadPaths(t *testing.T) {
	for _, p := range []string{"", ":memory:", "file:hub.db", "hub.db?mode=ro", "hub#1.db"} {
		if _, err := Open(t.Context(), p); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Open(%q) = %v, want ErrInvalid", p, err)
		}
	}
	_, err := Open(t.Context(), filepath.Join(t.TempDir(), "missing", "hub.db"))
	if err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}

func TestConnectionSetup(t *testing.T) {
	ctx := t.Context()
	s := mustOpen(t, filepath.Join(t.TempDir(), "hub.db"))
	for _, c := range []struct {
		db     string
		pragma string
		want   string
	}{
		{"w", "journal_mode", "wal"},
		{"r", "journal_mode", "wal"},
		{"w", "foreign_keys", "1"},
		{"r", "foreign_keys", "1"},
		{"w", "busy_timeout", "10000"},
		{"r", "busy_timeout", "10000"},
		{"r", "query_only", "1"},
		{"w", "query_only", "0"},
	} {
		db := s.w
		if c.db == "r" {
			db = s.r
		}
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s pool: PRAGMA %s = %s, want %s", c.db, c.pragma, got, c.want)
		}
	}
	if _, err := s.r.ExecContext(ctx, `INSERT INTO devices (id, first_seen, last_seen) VALUES ('x', 0, 0)`); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestMigrationFailureLeavesSchemaAlone(t *testing.T) {
	// A database where a table of the first migration already exists: the
	// migration fails, and its transaction leaves no migrations table.
	path := filepath.Join(t.TempDir(), "hub.db")
	pre, err := openRaw(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pre.ExecContext(t.Context(), `CREATE TABLE releases (x)`); err != nil {
		t.Fatal(err)
	}
	pre.Close()
	if _, err := Open(t.Context(), path); err == nil || !strings.Contains(err.Error(), "0001_init.sql") {
		t.Fatalf("Open over a conflicting table: %v; want the failing migration named", err)
	}
	check, err := openRaw(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	var n int
	if err := check.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name IN ('migrations', 'devices')`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("a failed migration left %d tables behind", n)
	}
}

// openRaw opens the file without the Store's setup.
func openRaw(ctx context.Context, path string) (*sql.DB, error) {
	db, err := sql.Open("sqlite", path)
	if err != nil {
		return nil, err
	}
	return db, db.PingContext(ctx)
}

func TestDurableWritesSyncOnlyThemselves(t *testing.T) {
	ctx := t.Context()
	s := mustOpen(t, filepath.Join(t.TempDir(), "hub.db"))
	level := func(q queryer) int {
		t.Helper()
		var n int
		if err := q.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const normal, full = 1, 2
	var inside int
	err := s.writeDurable(ctx, func(tx *sql.Tx) error { inside = level(tx); return nil })
	if err != nil || inside != full {
		t.Errorf("inside writeDurable: synchronous = %d, %v; want %d (FULL)", inside, err, full)
	}
	err = s.write(ctx, func(tx *sql.Tx) error { inside = level(tx); return nil })
	if err != nil || inside != normal {
		t.Errorf("inside write: synchronous = %d, %v; want %d (NORMAL)", inside, err, normal)
	}
	if got := level(s.w); got != normal {
		t.Errorf("after a durable write: synchronous = %d, want %d", got, normal)
	}
}
