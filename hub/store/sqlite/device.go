package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// touch registers the device if unknown and, when alive, moves last_seen
// forward to seen.
func touch(ctx context.Context, q queryer, id string, seen time.Time, alive bool) error {
	if err := manifest.ValidateDeviceID(id); err != nil {
		return fmt.Errorf("%v: %w", err, store.ErrInvalid)
	}
	if seen.IsZero() {
		return fmt.Errorf("device %s: no time given: %w", id, store.ErrInvalid)
	}
	query := `INSERT INTO devices (id, first_seen, last_seen) VALUES (?1, ?2, ?2)
		ON CONFLICT (id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen)`
	if !alive {
		query = `INSERT INTO devices (id, first_seen, last_seen) VALUES (?1, ?2, ?2) ON CONFLICT (id) DO NOTHING`
	}
	_, err := q.ExecContext(ctx, query, id, seen.UnixMicro())
	return err
}

// UpsertDevice implements store.Store.
func (s *Store) UpsertDevice(ctx context.Context, id string, seen time.Time) error {
	if err := touch(ctx, s.w, id, seen, true); err != nil {
		return fmt.Errorf("upsert device %s: %w", id, err)
	}
	return nil
}

// SetOnline implements store.Store.
func (s *Store) SetOnline(ctx context.Context, id string, online bool, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		// The last will arrives when the broker notices the device is gone:
		// it is no sign of life, so it does not count as seen.
		if err := touch(ctx, tx, id, at, online); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE devices SET online = ? WHERE id = ?`, online, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("set device %s online=%t: %w", id, online, err)
	}
	return nil
}

// SetDeviceState implements store.Store.
func (s *Store) SetDeviceState(ctx context.Context, id string, st report.State, at time.Time) error {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if err := touch(ctx, tx, id, at, true); err != nil {
			return err
		}
		inv, err := json.Marshal(st.Runtime)
		if err != nil {
			return err
		}
		reported, err := jsonText(nonNil(st.Labels))
		if err != nil {
			return err
		}
		accepted, err := u64("accepted sequence", st.Sequence)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET reported_labels = ?, inventory = ?,
			accepted_sequence = MAX(accepted_sequence, ?) WHERE id = ?`, reported, string(inv), accepted, id); err != nil {
			return err
		}
		if err := syncLabels(ctx, tx, id); err != nil {
			return err
		}
		return syncModels(ctx, tx, id, st.Models, at)
	})
	if err != nil {
		return fmt.Errorf("set state of device %s: %w", id, err)
	}
	return nil
}

// syncModels makes device_models hold exactly models, moving updated_at
// only for entries that changed.
func syncModels(ctx context.Context, tx *sql.Tx, id string, models map[string]report.Model, at time.Time) error {
	old, err := loadModels(ctx, tx, id)
	if err != nil {
		return err
	}
	for name := range old {
		if _, ok := models[name]; !ok {
			if _, err := tx.ExecContext(ctx, `DELETE FROM device_models WHERE device = ? AND model = ?`, id, name); err != nil {
				return err
			}
		}
	}
	for name, m := range models {
		next := store.DeviceModel{Version: m.Version, Phase: m.Phase, Pending: m.Pending,
			Previous: m.Previous, Error: m.Error, Provider: m.Provider, UpdatedAt: at.UTC()}
		if prev, ok := old[name]; ok {
			next.UpdatedAt = prev.UpdatedAt
			if prev == next {
				continue
			}
			next.UpdatedAt = at.UTC()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_models
			(device, model, version, phase, pending, previous, error, provider, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (device, model) DO UPDATE SET version = excluded.version, phase = excluded.phase,
				pending = excluded.pending, previous = excluded.previous, error = excluded.error,
				provider = excluded.provider, updated_at = excluded.updated_at`,
			id, name, m.Version, m.Phase, m.Pending, m.Previous, m.Error, m.Provider, at.UnixMicro()); err != nil {
			return err
		}
	}
	return nil
}

// syncLabels rewrites the device's effective labels from its reported and
// hub labels.
func syncLabels(ctx context.Context, tx *sql.Tx, id string) error {
	var reportedText, hubText string
	if err := tx.QueryRowContext(ctx, `SELECT reported_labels, hub_labels FROM devices WHERE id = ?`, id).
		Scan(&reportedText, &hubText); err != nil {
		return err
	}
	var reported, hub map[string]string
	if err := fromJSON("reported_labels", reportedText, &reported); err != nil {
		return err
	}
	if err := fromJSON("hub_labels", hubText, &hub); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM device_labels WHERE device = ?`, id); err != nil {
		return err
	}
	for k, v := range store.EffectiveLabels(reported, hub) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO device_labels (device, key, value) VALUES (?, ?, ?)`, id, k, v); err != nil {
			return err
		}
	}
	return nil
}

// SetLabels implements store.Store.
func (s *Store) SetLabels(ctx context.Context, id string, set map[string]string, remove []string) (store.Device, error) {
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if err := store.ValidateLabel(k, set[k]); err != nil {
			return store.Device{}, fmt.Errorf("label device %s: %w", id, err)
		}
	}
	for _, k := range remove {
		if _, ok := set[k]; ok {
			return store.Device{}, fmt.Errorf("label device %s: label %q both set and removed: %w", id, k, store.ErrInvalid)
		}
	}
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		var text string
		err := tx.QueryRowContext(ctx, `SELECT hub_labels FROM devices WHERE id = ?`, id).Scan(&text)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device %s: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return err
		}
		hub := map[string]string{}
		if err := fromJSON("hub_labels", text, &hub); err != nil {
			return err
		}
		maps.Copy(hub, set)
		for _, k := range remove {
			delete(hub, k)
		}
		if text, err = jsonText(hub); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE devices SET hub_labels = ? WHERE id = ?`, text, id); err != nil {
			return err
		}
		return syncLabels(ctx, tx, id)
	})
	if err != nil {
		return store.Device{}, fmt.Errorf("label device %s: %w", id, err)
	}
	return s.GetDevice(ctx, id)
}

const deviceColumns = `id, reported_labels, hub_labels, first_seen, last_seen, online, inventory, sequence, accepted_sequence,
	telemetry_time, system`

func scanDevice(row interface{ Scan(...any) error }) (store.Device, error) {
	var (
		d                store.Device
		reported, hub    string
		first, last      sql.NullInt64
		inventory        sql.NullString
		seq, acceptedSeq int64
		telemetryTime    sql.NullInt64
		system           sql.NullString
	)
	if err := row.Scan(&d.ID, &reported, &hub, &first, &last, &d.Online, &inventory, &seq, &acceptedSeq,
		&telemetryTime, &system); err != nil {
		return d, err
	}
	d.TelemetryTime = fromMicros(telemetryTime)
	if system.Valid {
		d.System = new(report.DeviceStats)
		if err := fromJSON("system", system.String, d.System); err != nil {
			return d, err
		}
	}
	if err := fromJSON("reported_labels", reported, &d.ReportedLabels); err != nil {
		return d, err
	}
	if err := fromJSON("hub_labels", hub, &d.HubLabels); err != nil {
		return d, err
	}
	d.Labels = store.EffectiveLabels(d.ReportedLabels, d.HubLabels)
	d.FirstSeen, d.LastSeen = fromMicros(first), fromMicros(last)
	if inventory.Valid {
		d.Inventory = json.RawMessage(inventory.String)
	}
	d.Sequence, d.AcceptedSequence = uint64(seq), uint64(acceptedSeq)
	d.Models = map[string]store.DeviceModel{}
	return d, nil
}

// loadModels returns the models of one device.
func loadModels(ctx context.Context, q queryer, id string) (map[string]store.DeviceModel, error) {
	all, err := queryModels(ctx, q, `WHERE device = ?`, id)
	if err != nil {
		return nil, err
	}
	if all[id] == nil {
		return map[string]store.DeviceModel{}, nil
	}
	return all[id], nil
}

// queryModels returns device_models rows chosen by where, by device and model.
func queryModels(ctx context.Context, q queryer, where string, args ...any) (map[string]map[string]store.DeviceModel, error) {
	rows, err := q.QueryContext(ctx, `SELECT device, model, version, phase, pending, previous, error, provider, updated_at
		FROM device_models `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]map[string]store.DeviceModel{}
	for rows.Next() {
		var (
			dev, name string
			m         store.DeviceModel
			updated   sql.NullInt64
		)
		if err := rows.Scan(&dev, &name, &m.Version, &m.Phase, &m.Pending, &m.Previous, &m.Error, &m.Provider, &updated); err != nil {
			return nil, err
		}
		m.UpdatedAt = fromMicros(updated)
		if out[dev] == nil {
			out[dev] = map[string]store.DeviceModel{}
		}
		out[dev][name] = m
	}
	return out, rows.Err()
}

// GetDevice implements store.Store.
func (s *Store) GetDevice(ctx context.Context, id string) (store.Device, error) {
	var d store.Device
	err := s.read(ctx, func(tx *sql.Tx) error {
		var err error
		d, err = scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		d.Models, err = loadModels(ctx, tx, id)
		return err
	})
	if err != nil {
		return store.Device{}, fmt.Errorf("get device %s: %w", id, err)
	}
	return d, nil
}

// ListDevices implements store.Store.
func (s *Store) ListDevices(ctx context.Context, sel store.Selector) ([]store.Device, error) {
	if err := sel.Validate(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	// Each pair of the selector is one indexed lookup in device_labels.
	var where strings.Builder
	var args []any
	for i, k := range slices.Sorted(maps.Keys(sel)) {
		if i == 0 {
			where.WriteString(` WHERE `)
		} else {
			where.WriteString(` AND `)
		}
		where.WriteString(`id IN (SELECT device FROM device_labels WHERE key = ? AND value = ?)`)
		args = append(args, k, sel[k])
	}
	var out []store.Device
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices`+where.String()+` ORDER BY id`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			d, err := scanDevice(rows)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows.Close()
		if len(out) == 0 {
			return nil
		}
		var models map[string]map[string]store.DeviceModel
		if len(sel) == 0 {
			models, err = queryModels(ctx, tx, ``)
		} else {
			models, err = queryModels(ctx, tx, `WHERE device IN (SELECT id FROM devices`+where.String()+`)`, args...)
		}
		if err != nil {
			return err
		}
		for i := range out {
			if m := models[out[i].ID]; m != nil {
				out[i].Models = m
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list devices %q: %w", sel.String(), err)
	}
	return out, nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
