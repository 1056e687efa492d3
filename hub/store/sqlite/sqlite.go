// Package sqlite implements store.Store on an SQLite database file through
// modernc.org/sqlite (pure Go, no cgo). It is the hub's default store and
// the one `fleethub dev` uses.
//
// Concurrency: SQLite allows many readers but one writer at a time. The
// Store keeps two connection pools on the same file: a single writer
// connection, so the hub's own writes queue in database/sql instead of
// failing with "database is locked", and a pool of read-only connections
// that, thanks to write-ahead logging (WAL), read a consistent snapshot
// while a write is under way. Write transactions begin IMMEDIATE (they take
// the write lock at BEGIN), and a busy timeout makes a second process on
// the same file wait rather than fail. A Store is safe for concurrent use.
//
// Durability: every commit survives a crash of the hub process. Sequences,
// saved assignments, releases, labels and rollouts are also synced to disk
// before their methods return, so they survive a power loss; device state,
// online flags, telemetry and events may lose their last seconds then, as
// devices report them again or they are aggregates.
//
// The schema is created and upgraded by numbered SQL migrations embedded in
// the binary, applied in one transaction by Open and recorded in the
// migrations table.
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/modelfleet/modelfleet/hub/store"
)

// BusyTimeout is how long a connection waits for another process's lock on
// the database file before failing with "database is locked".
const BusyTimeout = 10 * time.Second

// Store is a store.Store on one SQLite database file. Create it with Open.
type Store struct {
	w   *sql.DB // the one writer connection
	r   *sql.DB // read-only connections
	now func() time.Time

	// Statements of the telemetry ingest path, prepared once on the writer
	// connection: parsing them on every message cost more than running them.
	telemetryDevice, selectRollup, upsertRollup *sql.Stmt

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Option configures Open.
type Option func(*Store)

// WithClock sets the clock the store stamps Created, Updated and Saved
// times with; the default is time.Now.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open opens (creating if needed) the database file at path and applies any
// pending migrations in one transaction. The directory must exist. Several
// Stores, even in several processes, may open the same file; migrations are
// applied once. It fails if the file was migrated by a newer hub than this
// one.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store %q: want a plain file path without '?' or '#' (in-memory databases are not supported: the store keeps two connection pools): %w", path, store.ErrInvalid)
	}
	base := path + "?_pragma=busy_timeout(" + fmt.Sprint(BusyTimeout.Milliseconds()) + ")&_pragma=foreign_keys(1)"
	s := &Store{now: time.Now}
	for _, o := range opts {
		o(s)
	}
	var err error
	// synchronous=NORMAL by default; see write and writeDurable.
	if s.w, err = sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"); err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxIdleTime(0)
	s.w.SetConnMaxLifetime(0)
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if s.r, err = sql.Open("sqlite", base+"&_query_only=1"); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(n)
	s.r.SetMaxIdleConns(n)
	if err := s.r.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// Close closes both connection pools, waiting for queries in flight. It is
// safe to call more than once and on a nil Store.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	s.closeOnce.Do(func() {
		var errs []error
		if s.r != nil {
			errs = append(errs, s.r.Close())
		}
		for _, st := range []*sql.Stmt{s.telemetryDevice, s.selectRollup, s.upsertRollup} {
			if st != nil {
				errs = append(errs, st.Close())
			}
		}
		if s.w != nil {
			// A final checkpoint folds the WAL into the database file so a
			// copied file is complete; failure is harmless.
			_, _ = s.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
			errs = append(errs, s.w.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// write runs fn in a write transaction (BEGIN IMMEDIATE on the single
// writer connection) and commits if fn returns nil. The commit survives a
// crash of the process; after a power loss or OS crash the last such
// commits may be missing (synchronous=NORMAL), which is fine for what
// devices report again (state, online) or for aggregates (telemetry,
// events). Writes that must never be lost use writeDurable.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.writeTx(ctx, false, fn)
}

// writeDurable is write with a commit that also survives power loss
// (synchronous=FULL: the WAL is synced before COMMIT returns), for
// assignment sequences, saved assignments, releases, labels and rollouts:
// a sequence issued twice would be refused by the device as a replay, and
// a rollout that forgot a wave would redo it.
func (s *Store) writeDurable(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return s.writeTx(ctx, true, fn)
}

func (s *Store) writeTx(ctx context.Context, durable bool, fn func(tx *sql.Tx) error) error {
	// The pool holds one connection, so holding it makes the synchronous
	// setting apply to this transaction only.
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if durable {
		if _, err := conn.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
			return err
		}
		defer func() {
			// Failing to reset only makes later commits slower.
			_, _ = conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA synchronous = NORMAL`)
		}()
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn in a read transaction: one consistent snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to undo
	return fn(tx)
}

// isConstraint reports whether err is an SQLite UNIQUE or PRIMARY KEY
// violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return true
	}
	return false
}

// queryer is what *sql.DB and *sql.Tx have in common.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// micros converts a time to its column value: microseconds since the epoch,
// or NULL for the zero time.
func micros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromMicros converts a column value back; NULL is the zero time.
func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// u64 converts a uint64 to a column value; SQLite integers are signed.
func u64(what string, v uint64) (int64, error) {
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("%s %d is above the largest storable %d: %w", what, v, int64(math.MaxInt64), store.ErrInvalid)
	}
	return int64(v), nil
}

// jsonText marshals v for a JSON column.
func jsonText(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// fromJSON unmarshals a JSON column into v, naming the column on error.
func fromJSON(col, text string, v any) error {
	if text == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return fmt.Errorf("decode column %s: %w", col, err)
	}
	return nil
}
