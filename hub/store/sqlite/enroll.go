package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

// CreateEnrollToken implements store.Store.
func (s *Store) CreateEnrollToken(ctx context.Context, t store.EnrollToken) error {
	if err := t.Validate(); err != nil {
		return err
	}
	labels, err := jsonText(nonNil(t.Labels))
	if err != nil {
		return err
	}
	err = s.writeDurable(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO enroll_tokens (hash, device_id, labels, created, expires)
			VALUES (?, ?, ?, ?, ?)`, t.Hash, t.DeviceID, labels, t.Created.UnixMicro(), t.Expires.UnixMicro())
		if isConstraint(err) {
			return store.ErrConflict
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create enroll token %s: %w", t.ID(), err)
	}
	return nil
}

func getEnrollToken(ctx context.Context, q queryer, hash []byte) (store.EnrollToken, error) {
	t := store.EnrollToken{Hash: hash}
	var (
		labels           string
		created, expires int64
		used             sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `SELECT device_id, labels, created, expires, used_at, used_by
		FROM enroll_tokens WHERE hash = ?`, hash).Scan(&t.DeviceID, &labels, &created, &expires, &used, &t.UsedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return t, store.ErrNotFound
	}
	if err != nil {
		return t, err
	}
	t.Created, t.Expires = time.UnixMicro(created).UTC(), time.UnixMicro(expires).UTC()
	t.UsedAt = fromMicros(used)
	if err := fromJSON("labels", labels, &t.Labels); err != nil {
		return t, err
	}
	return t, nil
}

// GetEnrollToken implements store.Store.
func (s *Store) GetEnrollToken(ctx context.Context, hash []byte) (store.EnrollToken, error) {
	t, err := getEnrollToken(ctx, s.r, hash)
	if err != nil {
		return store.EnrollToken{}, fmt.Errorf("get enroll token %s: %w", store.EnrollToken{Hash: hash}.ID(), err)
	}
	return t, nil
}

// ConsumeEnrollToken implements store.Store. Everything happens in one
// IMMEDIATE write transaction, which holds SQLite's write lock from BEGIN:
// a second caller with the same token waits and then finds it used.
func (s *Store) ConsumeEnrollToken(ctx context.Context, hash []byte, device string, at time.Time) (store.EnrollToken, error) {
	var out store.EnrollToken
	if err := manifest.ValidateDeviceID(device); err != nil {
		return out, fmt.Errorf("enroll device: %v: %w", err, store.ErrInvalid)
	}
	if at.IsZero() {
		return out, fmt.Errorf("enroll device %s: no time given: %w", device, store.ErrInvalid)
	}
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		t, err := getEnrollToken(ctx, tx, hash)
		if err != nil {
			return err
		}
		switch {
		case !t.UsedAt.IsZero():
			return fmt.Errorf("already used at %s by device %s: %w", t.UsedAt.Format(time.RFC3339), t.UsedBy, store.ErrConflict)
		case !at.Before(t.Expires):
			return fmt.Errorf("expired at %s: %w", t.Expires.Format(time.RFC3339), store.ErrExpired)
		case t.DeviceID != "" && t.DeviceID != device:
			return fmt.Errorf("the token is for device %s, not %s: %w", t.DeviceID, device, store.ErrInvalid)
		}
		if t.DeviceID == "" {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE id = ?`, device).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return fmt.Errorf("device %s is already registered; to re-enroll it, make a token naming it (--device-id): %w", device, store.ErrConflict)
			}
		}
		res, err := tx.ExecContext(ctx, `UPDATE enroll_tokens SET used_at = ?, used_by = ? WHERE hash = ? AND used_at IS NULL`,
			at.UnixMicro(), device, hash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("already used: %w", store.ErrConflict)
		}
		if err := touch(ctx, tx, device, at, false); err != nil {
			return err
		}
		var text string
		if err := tx.QueryRowContext(ctx, `SELECT hub_labels FROM devices WHERE id = ?`, device).Scan(&text); err != nil {
			return err
		}
		hub := map[string]string{}
		if err := fromJSON("hub_labels", text, &hub); err != nil {
			return err
		}
		maps.Copy(hub, t.Labels)
		if text, err = jsonText(hub); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET hub_labels = ? WHERE id = ?`, text, device); err != nil {
			return err
		}
		if err := syncLabels(ctx, tx, device); err != nil {
			return err
		}
		t.UsedAt, t.UsedBy = time.UnixMicro(at.UnixMicro()).UTC(), device
		out = t
		return nil
	})
	if err != nil {
		return store.EnrollToken{}, fmt.Errorf("enroll device %s with token %s: %w", device, store.EnrollToken{Hash: hash}.ID(), err)
	}
	return out, nil
}
