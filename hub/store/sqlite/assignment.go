package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/modelfleet/modelfleet/hub/store"
)

// NextSequence implements store.Store. The increment is one UPDATE … RETURNING
// in a write transaction, so concurrent callers, even in other processes,
// each get their own number, and it is on disk before it is returned.
func (s *Store) NextSequence(ctx context.Context, device string) (uint64, error) {
	var seq int64
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE devices SET sequence = MAX(sequence, accepted_sequence) + 1
			WHERE id = ? RETURNING sequence`, device).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("next assignment sequence of device %s: %w", device, err)
	}
	return uint64(seq), nil
}

// SaveAssignment implements store.Store.
func (s *Store) SaveAssignment(ctx context.Context, a store.SignedAssignment) error {
	if len(a.Envelope) == 0 {
		return fmt.Errorf("save assignment for device %s: empty envelope: %w", a.Device, store.ErrInvalid)
	}
	seq, err := u64("sequence", a.Sequence)
	if err != nil {
		return fmt.Errorf("save assignment for device %s: %w", a.Device, err)
	}
	err = s.writeDurable(ctx, func(tx *sql.Tx) error {
		var drawn int64
		err := tx.QueryRowContext(ctx, `SELECT sequence FROM devices WHERE id = ?`, a.Device).Scan(&drawn)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device: %w", store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		if seq < 1 || seq > drawn {
			return fmt.Errorf("sequence %d was not drawn with NextSequence (last drawn: %d): %w", seq, drawn, store.ErrInvalid)
		}
		var saved int64
		err = tx.QueryRowContext(ctx, `SELECT sequence FROM assignments WHERE device = ?`, a.Device).Scan(&saved)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if seq <= saved {
			return fmt.Errorf("sequence %d is not above the saved %d: %w", seq, saved, store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO assignments (device, sequence, envelope, saved) VALUES (?, ?, ?, ?)
			ON CONFLICT (device) DO UPDATE SET sequence = excluded.sequence, envelope = excluded.envelope, saved = excluded.saved`,
			a.Device, seq, a.Envelope, s.now().UnixMicro())
		return err
	})
	if err != nil {
		return fmt.Errorf("save assignment for device %s sequence %d: %w", a.Device, a.Sequence, err)
	}
	return nil
}

// LastAssignment implements store.Store.
func (s *Store) LastAssignment(ctx context.Context, device string) (store.SignedAssignment, error) {
	a := store.SignedAssignment{Device: device}
	var (
		seq   int64
		saved sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT sequence, envelope, saved FROM assignments WHERE device = ?`, device).
		Scan(&seq, &a.Envelope, &saved)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.SignedAssignment{}, fmt.Errorf("last assignment of device %s: %w", device, err)
	}
	a.Sequence, a.Saved = uint64(seq), fromMicros(saved)
	return a, nil
}
