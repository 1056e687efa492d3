package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/modelfleet/modelfleet/hub/store"
)

// NextSequence implements store.Store: NextSequences of one device.
func (s *Store) NextSequence(ctx context.Context, device string) (uint64, error) {
	seqs, err := s.NextSequences(ctx, []string{device})
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// NextSequences implements store.Store. Each increment is one UPDATE …
// RETURNING, all of them in one write transaction, so concurrent callers,
// even in other processes, each get their own numbers, and they are on disk
// (one sync for the whole batch) before they are returned.
func (s *Store) NextSequences(ctx context.Context, devices []string) ([]uint64, error) {
	if len(devices) == 0 {
		return nil, nil
	}
	seqs := make([]uint64, len(devices))
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `UPDATE devices SET sequence = MAX(sequence, accepted_sequence) + 1
			WHERE id = ? RETURNING sequence`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, device := range devices {
			var seq int64
			err := stmt.QueryRowContext(ctx, device).Scan(&seq)
			if errors.Is(err, sql.ErrNoRows) {
				err = store.ErrNotFound
			}
			if err != nil {
				return fmt.Errorf("next assignment sequence of device %s: %w", device, err)
			}
			seqs[i] = uint64(seq)
		}
		return nil
	})
	if err != nil {
		if len(devices) > 1 {
			err = fmt.Errorf("draw assignment sequences of %d devices (none drawn): %w", len(devices), err)
		}
		return nil, err
	}
	return seqs, nil
}

// SaveAssignment implements store.Store: SaveAssignments of one.
func (s *Store) SaveAssignment(ctx context.Context, a store.SignedAssignment) error {
	return s.SaveAssignments(ctx, []store.SignedAssignment{a})
}

// SaveAssignments implements store.Store: one durable write transaction.
func (s *Store) SaveAssignments(ctx context.Context, as []store.SignedAssignment) error {
	if len(as) == 0 {
		return nil
	}
	seqs := make([]int64, len(as))
	for i, a := range as {
		var err error
		if len(a.Envelope) == 0 {
			err = fmt.Errorf("empty envelope: %w", store.ErrInvalid)
		} else {
			seqs[i], err = u64("sequence", a.Sequence)
		}
		if err != nil {
			return saveError(len(as), fmt.Errorf("save assignment for device %s: %w", a.Device, err))
		}
	}
	saved := s.now().UnixMicro()
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		drawnStmt, err := tx.PrepareContext(ctx, `SELECT sequence FROM devices WHERE id = ?`)
		if err != nil {
			return err
		}
		defer drawnStmt.Close()
		savedStmt, err := tx.PrepareContext(ctx, `SELECT sequence FROM assignments WHERE device = ?`)
		if err != nil {
			return err
		}
		defer savedStmt.Close()
		upsert, err := tx.PrepareContext(ctx, `INSERT INTO assignments (device, sequence, envelope, saved) VALUES (?, ?, ?, ?)
			ON CONFLICT (device) DO UPDATE SET sequence = excluded.sequence, envelope = excluded.envelope, saved = excluded.saved`)
		if err != nil {
			return err
		}
		defer upsert.Close()
		for i, a := range as {
			if err := saveOne(ctx, drawnStmt, savedStmt, upsert, a.Device, seqs[i], a.Envelope, saved); err != nil {
				return fmt.Errorf("save assignment for device %s sequence %d: %w", a.Device, a.Sequence, err)
			}
		}
		return nil
	})
	if err != nil {
		return saveError(len(as), err)
	}
	return nil
}

// saveError says that nothing of a batch of n was saved.
func saveError(n int, err error) error {
	if n > 1 {
		return fmt.Errorf("save %d assignments (none saved): %w", n, err)
	}
	return err
}

// saveOne checks and saves one assignment inside SaveAssignments'
// transaction.
func saveOne(ctx context.Context, drawnStmt, savedStmt, upsert *sql.Stmt, device string, seq int64, envelope []byte, saved int64) error {
	var drawn int64
	err := drawnStmt.QueryRowContext(ctx, device).Scan(&drawn)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("device: %w", store.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if seq < 1 || seq > drawn {
		return fmt.Errorf("sequence %d was not drawn with NextSequence (last drawn: %d): %w", seq, drawn, store.ErrInvalid)
	}
	var last int64
	err = savedStmt.QueryRowContext(ctx, device).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if seq <= last {
		return fmt.Errorf("sequence %d is not above the saved %d: %w", seq, last, store.ErrConflict)
	}
	_, err = upsert.ExecContext(ctx, device, seq, envelope, saved)
	return err
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
