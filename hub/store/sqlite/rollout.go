package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
)

// rolloutJSON holds the JSON columns of a rollout.
type rolloutJSON struct {
	selector, waves, gates, previous, history string
	state                                     sql.NullString
}

func encodeRollout(r *store.Rollout) (rolloutJSON, error) {
	var (
		j   rolloutJSON
		err error
	)
	for _, c := range []struct {
		dst *string
		v   any
	}{
		{&j.selector, nonNil(r.Selector)},
		{&j.waves, nonNilSlice(r.Waves)},
		{&j.gates, nonNilSlice(r.Gates)},
		{&j.previous, nonNil(r.PreviousVersions)},
		{&j.history, nonNilSlice(r.History)},
	} {
		if *c.dst, err = jsonText(c.v); err != nil {
			return j, err
		}
	}
	if len(r.State) > 0 {
		j.state = sql.NullString{String: string(r.State), Valid: true}
	}
	return j, nil
}

// CreateRollout implements store.Store.
func (s *Store) CreateRollout(ctx context.Context, r store.Rollout) (store.Rollout, error) {
	r = r.Clone()
	r.ID, r.Revision = 0, 1
	if err := r.Validate(); err != nil {
		return store.Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	j, err := encodeRollout(&r)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	var out store.Rollout
	err = s.writeDurable(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM releases WHERE name = ? AND version = ?`, r.Model, r.Version).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("release %s@%s: push it first: %w", r.Model, r.Version, store.ErrNotFound)
		}
		if err := checkUnfinished(ctx, tx, &r); err != nil {
			return err
		}
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO rollouts (model, version, selector, waves, soak_seconds, gates,
			mode, on_failure, install_timeout_s, status, wave, wave_started, previous_versions, history, state,
			created, updated, revision)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			r.Model, r.Version, j.selector, j.waves, r.SoakSeconds, j.gates, r.Mode, r.OnFailure, r.InstallTimeoutSeconds,
			string(r.Status), r.Wave, micros(r.WaveStarted), j.previous, j.history, j.state,
			now.UnixMicro(), now.UnixMicro(), r.Revision).Scan(&id)
		if isConstraint(err) {
			return fmt.Errorf("model %s already has an unfinished rollout: %w", r.Model, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		out, err = getRollout(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.Rollout{}, fmt.Errorf("create rollout of %s@%s: %w", r.Model, r.Version, err)
	}
	return out, nil
}

// checkUnfinished returns ErrConflict if r is unfinished and another
// unfinished rollout exists for its model. The unique index enforces the
// same; this check gives the operator a message naming the other rollout.
func checkUnfinished(ctx context.Context, tx *sql.Tx, r *store.Rollout) error {
	if r.Status.Finished() {
		return nil
	}
	var other int64
	var status string
	err := tx.QueryRowContext(ctx, `SELECT id, status FROM rollouts
		WHERE model = ? AND id != ? AND status IN ('pending', 'running', 'paused')`, r.Model, r.ID).Scan(&other, &status)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("model %s already has rollout %d %s; finish or abort it first: %w", r.Model, other, status, store.ErrConflict)
}

// UpdateRollout implements store.Store.
func (s *Store) UpdateRollout(ctx context.Context, r store.Rollout) (store.Rollout, error) {
	r = r.Clone()
	if err := r.Validate(); err != nil {
		return store.Rollout{}, fmt.Errorf("update rollout: %w", err)
	}
	j, err := encodeRollout(&r)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("update %s: %w", r.Ref(), err)
	}
	var out store.Rollout
	err = s.writeDurable(ctx, func(tx *sql.Tx) error {
		cur, err := getRollout(ctx, tx, r.ID)
		if err != nil {
			return err
		}
		if cur.Revision != r.Revision {
			return fmt.Errorf("revision %d is stale (stored: %d); read it again: %w", r.Revision, cur.Revision, store.ErrConflict)
		}
		if cur.Model != r.Model || cur.Version != r.Version {
			return fmt.Errorf("cannot change the release from %s@%s to %s@%s; start a new rollout: %w",
				cur.Model, cur.Version, r.Model, r.Version, store.ErrInvalid)
		}
		if err := checkUnfinished(ctx, tx, &r); err != nil {
			return err
		}
		// Updated never goes backwards, even if the clock does, so it
		// orders the writes like Revision does.
		now := s.now().UTC().Truncate(time.Microsecond)
		if !now.After(cur.Updated) {
			now = cur.Updated.Add(time.Microsecond)
		}
		r.Created, r.Updated, r.Revision = cur.Created, now, cur.Revision+1
		res, err := tx.ExecContext(ctx, `UPDATE rollouts SET selector = ?, waves = ?, soak_seconds = ?, gates = ?,
			mode = ?, on_failure = ?, install_timeout_s = ?, status = ?, wave = ?, wave_started = ?,
			previous_versions = ?, history = ?, state = ?, updated = ?, revision = ? WHERE id = ? AND revision = ?`,
			j.selector, j.waves, r.SoakSeconds, j.gates, r.Mode, r.OnFailure, r.InstallTimeoutSeconds, string(r.Status),
			r.Wave, micros(r.WaveStarted), j.previous, j.history, j.state, now.UnixMicro(), r.Revision, r.ID, cur.Revision)
		if isConstraint(err) {
			return fmt.Errorf("model %s already has an unfinished rollout: %w", r.Model, store.ErrConflict)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			return fmt.Errorf("revision %d is stale: %w", cur.Revision, store.ErrConflict)
		}
		out, err = getRollout(ctx, tx, r.ID)
		return err
	})
	if err != nil {
		return store.Rollout{}, fmt.Errorf("update %s: %w", r.Ref(), err)
	}
	return out, nil
}

const rolloutColumns = `id, model, version, selector, waves, soak_seconds, gates, mode, on_failure,
	install_timeout_s, status, wave, wave_started, previous_versions, history, state, created, updated, revision`

func scanRollout(row interface{ Scan(...any) error }) (store.Rollout, error) {
	var (
		r                         store.Rollout
		j                         rolloutJSON
		status                    string
		waveStarted, created, upd sql.NullInt64
	)
	if err := row.Scan(&r.ID, &r.Model, &r.Version, &j.selector, &j.waves, &r.SoakSeconds, &j.gates, &r.Mode,
		&r.OnFailure, &r.InstallTimeoutSeconds, &status, &r.Wave, &waveStarted, &j.previous, &j.history, &j.state,
		&created, &upd, &r.Revision); err != nil {
		return r, err
	}
	if j.state.Valid {
		r.State = json.RawMessage(j.state.String)
	}
	r.Status = store.RolloutStatus(status)
	r.WaveStarted, r.Created, r.Updated = fromMicros(waveStarted), fromMicros(created), fromMicros(upd)
	for _, c := range []struct {
		col, text string
		dst       any
	}{
		{"selector", j.selector, &r.Selector},
		{"waves", j.waves, &r.Waves},
		{"gates", j.gates, &r.Gates},
		{"previous_versions", j.previous, &r.PreviousVersions},
		{"history", j.history, &r.History},
	} {
		if err := fromJSON(c.col, c.text, c.dst); err != nil {
			return r, fmt.Errorf("rollout %d: %w", r.ID, err)
		}
	}
	return r, nil
}

// getRollout reads one rollout; ErrNotFound if there is none.
func getRollout(ctx context.Context, q queryer, id int64) (store.Rollout, error) {
	r, err := scanRollout(q.QueryRowContext(ctx, `SELECT `+rolloutColumns+` FROM rollouts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return r, store.ErrNotFound
	}
	return r, err
}

// GetRollout implements store.Store.
func (s *Store) GetRollout(ctx context.Context, id int64) (store.Rollout, error) {
	r, err := getRollout(ctx, s.r, id)
	if err != nil {
		return store.Rollout{}, fmt.Errorf("get rollout %d: %w", id, err)
	}
	return r, nil
}

// ListRollouts implements store.Store.
func (s *Store) ListRollouts(ctx context.Context, statuses ...store.RolloutStatus) ([]store.Rollout, error) {
	query := `SELECT ` + rolloutColumns + ` FROM rollouts`
	var args []any
	if len(statuses) > 0 {
		for _, st := range statuses {
			if !st.Valid() {
				return nil, fmt.Errorf("list rollouts: status %q; want one of %v: %w", st, store.RolloutStatuses, store.ErrInvalid)
			}
			args = append(args, string(st))
		}
		query += ` WHERE status IN (?` + strings.Repeat(`, ?`, len(args)-1) + `)`
	}
	rows, err := s.r.QueryContext(ctx, query+` ORDER BY id DESC`, args...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer rows.Close()
	var out []store.Rollout
	for rows.Next() {
		r, err := scanRollout(rows)
		if err != nil {
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}
