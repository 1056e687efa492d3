package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
)

// AddEvent implements store.Store.
func (s *Store) AddEvent(ctx context.Context, e store.Event) (store.Event, error) {
	if e.Type == "" {
		return store.Event{}, fmt.Errorf("add event of device %s: no type: %w", e.Device, store.ErrInvalid)
	}
	seq, err := u64("sequence", e.Sequence)
	if err != nil {
		return store.Event{}, fmt.Errorf("add event of device %s: %w", e.Device, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		// The event's time is by the device's clock, so it only registers
		// an unknown device; LastSeen is the hub's to set (UpsertDevice).
		if err := touch(ctx, tx, e.Device, e.Time, false); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO events (device, time, type, model, version, sequence, check_id, reason)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			e.Device, e.Time.UnixMicro(), e.Type, e.Model, e.Version, seq, e.Check, e.Reason).Scan(&e.ID)
	})
	if err != nil {
		return store.Event{}, fmt.Errorf("add event of device %s: %w", e.Device, err)
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	return e, nil
}

// ListEvents implements store.Store.
func (s *Store) ListEvents(ctx context.Context, device string, since time.Time, limit int) ([]store.Event, error) {
	query, args := `SELECT id, device, time, type, model, version, sequence, check_id, reason FROM events WHERE time >= ?`,
		[]any{since.UnixMicro()}
	if since.IsZero() {
		args[0] = int64(-1 << 63)
	}
	if device != "" {
		query, args = query+` AND device = ?`, append(args, device)
	}
	query += ` ORDER BY time DESC, id DESC`
	if limit > 0 {
		query, args = query+` LIMIT ?`, append(args, limit)
	}
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var (
			e   store.Event
			at  sql.NullInt64
			seq int64
		)
		if err := rows.Scan(&e.ID, &e.Device, &at, &e.Type, &e.Model, &e.Version, &seq, &e.Check, &e.Reason); err != nil {
			return nil, fmt.Errorf("list events: %w", err)
		}
		e.Time, e.Sequence = fromMicros(at), uint64(seq)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out, nil
}

// Prune implements store.Store.
func (s *Store) Prune(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM telemetry_rollups WHERE minute < ?`,
			`DELETE FROM events WHERE time < ?`,
		} {
			res, err := tx.ExecContext(ctx, q, before.UnixMicro())
			if err != nil {
				return err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune data before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}
