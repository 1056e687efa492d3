package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/report"
	"github.com/modelfleet/modelfleet/manifest"
)

// AddTelemetry implements store.Store. Counters are added by the upsert
// itself (INSERT … ON CONFLICT DO UPDATE SET requests = requests + …); the
// JSON columns (histograms, errors by kind) are merged in Go from the row
// read in the same write transaction, which holds the write lock.
func (s *Store) AddTelemetry(ctx context.Context, device string, t report.Telemetry) error {
	if err := manifest.ValidateDeviceID(device); err != nil {
		return fmt.Errorf("add telemetry: %v: %w", err, store.ErrInvalid)
	}
	rollups, err := store.RollupsFromTelemetry(device, t)
	if err != nil {
		return fmt.Errorf("add telemetry: %w", err)
	}
	system, err := jsonText(t.System)
	if err != nil {
		return fmt.Errorf("add telemetry from %s: %w", device, err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.StmtContext(ctx, s.telemetryDevice).ExecContext(ctx, device, t.Time.UnixMicro(), system); err != nil {
			return err
		}
		for _, r := range rollups {
			if err := s.mergeRollup(ctx, tx, r); err != nil {
				return fmt.Errorf("model %s version %q: %w", r.Model, r.Version, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add telemetry from %s at %s: %w", device, t.Time.UTC().Format("2006-01-02T15:04:05Z"), err)
	}
	return nil
}

// Statements of the telemetry path (see Store.prepare).
const (
	// telemetryDeviceSQL registers the device (?1, seen at ?2 by its own
	// clock, without moving last_seen) and keeps the system stats ?3 of its
	// newest payload. SET expressions all see the row as it was.
	telemetryDeviceSQL = `INSERT INTO devices (id, first_seen, last_seen, telemetry_time, system) VALUES (?1, ?2, ?2, ?2, ?3)
		ON CONFLICT (id) DO UPDATE SET
			telemetry_time = CASE WHEN telemetry_time IS NULL OR telemetry_time <= excluded.telemetry_time
				THEN excluded.telemetry_time ELSE telemetry_time END,
			system = CASE WHEN telemetry_time IS NULL OR telemetry_time <= excluded.telemetry_time
				THEN excluded.system ELSE system END`
	selectRollupSQL = `SELECT errors_by_kind, latency, mixed_with, shadow_latency FROM telemetry_rollups
		WHERE device = ? AND model = ? AND version = ? AND minute = ?`
	upsertRollupSQL = `INSERT INTO telemetry_rollups (device, model, version, minute,
		reports, requests, errors, cold_starts, queue_rejections, shadow_compared, shadow_agreed,
		compute_cpu_ms, compute_gpu_ms, cold_start_ms, shadow_max_abs_diff,
		errors_by_kind, latency, mixed_with, shadow_latency)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (device, model, version, minute) DO UPDATE SET
			reports = reports + excluded.reports,
			requests = requests + excluded.requests,
			errors = errors + excluded.errors,
			cold_starts = cold_starts + excluded.cold_starts,
			queue_rejections = queue_rejections + excluded.queue_rejections,
			shadow_compared = shadow_compared + excluded.shadow_compared,
			shadow_agreed = shadow_agreed + excluded.shadow_agreed,
			compute_cpu_ms = compute_cpu_ms + excluded.compute_cpu_ms,
			compute_gpu_ms = compute_gpu_ms + excluded.compute_gpu_ms,
			cold_start_ms = cold_start_ms + excluded.cold_start_ms,
			shadow_max_abs_diff = MAX(shadow_max_abs_diff, excluded.shadow_max_abs_diff),
			errors_by_kind = excluded.errors_by_kind,
			latency = excluded.latency,
			mixed_with = excluded.mixed_with,
			shadow_latency = excluded.shadow_latency`
)

// prepare prepares the telemetry statements on the writer connection.
func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&s.telemetryDevice, telemetryDeviceSQL},
		{&s.selectRollup, selectRollupSQL},
		{&s.upsertRollup, upsertRollupSQL},
	} {
		st, err := s.w.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare statement: %w", err)
		}
		*p.dst = st
	}
	return nil
}

// mergeRollup merges r into its stored row.
func (s *Store) mergeRollup(ctx context.Context, tx *sql.Tx, r store.TelemetryRollup) error {
	key := []any{r.Device, r.Model, r.Version, r.Minute.UnixMicro()}
	// merged starts with the stored JSON parts only, so after Merge its
	// JSON parts are the merged ones; its counters are r's, which the
	// upsert adds in SQL.
	merged := store.TelemetryRollup{Device: r.Device, Model: r.Model, Version: r.Version, Minute: r.Minute}
	var errs, lat, mixed, shadowLat string
	err := tx.StmtContext(ctx, s.selectRollup).QueryRowContext(ctx, key...).Scan(&errs, &lat, &mixed, &shadowLat)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	default:
		for _, c := range []struct {
			col, text string
			dst       any
		}{
			{"errors_by_kind", errs, &merged.Errors},
			{"latency", lat, &merged.Latency},
			{"mixed_with", mixed, &merged.MixedWith},
			{"shadow_latency", shadowLat, &merged.Shadow.Latency},
		} {
			if err := fromJSON(c.col, c.text, c.dst); err != nil {
				return err
			}
		}
	}
	if err := merged.Merge(r); err != nil {
		return err
	}
	var ints []int64
	for _, c := range []struct {
		what string
		v    uint64
	}{
		{"reports", r.Reports}, {"requests", r.Requests}, {"errors", r.ErrorCount()},
		{"cold starts", r.ColdStarts}, {"queue rejections", r.QueueRejections},
		{"shadow compared", r.Shadow.Compared}, {"shadow agreed", r.Shadow.Agreed},
	} {
		n, err := u64(c.what, c.v)
		if err != nil {
			return err
		}
		ints = append(ints, n)
	}
	var texts []string
	for _, v := range []any{nonNilCounts(merged.Errors), merged.Latency, nonNilSlice(merged.MixedWith), merged.Shadow.Latency} {
		t, err := jsonText(v)
		if err != nil {
			return err
		}
		texts = append(texts, t)
	}
	_, err = tx.StmtContext(ctx, s.upsertRollup).ExecContext(ctx,
		key[0], key[1], key[2], key[3],
		ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6],
		r.ComputeMillis.CPU, r.ComputeMillis.GPU, r.ColdStartMillis, r.Shadow.MaxAbsDiff,
		texts[0], texts[1], texts[2], texts[3])
	return err
}

func nonNilCounts(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return map[string]uint64{}
	}
	return m
}

// ListTelemetry implements store.Store.
func (s *Store) ListTelemetry(ctx context.Context, q store.TelemetryQuery) ([]store.TelemetryRollup, error) {
	out, err := listTelemetry(ctx, s.r, q)
	if err != nil {
		return nil, fmt.Errorf("list telemetry: %w", err)
	}
	return out, nil
}

// QueryTelemetry implements store.Store.
func (s *Store) QueryTelemetry(ctx context.Context, q store.TelemetryQuery) (store.TelemetrySummary, error) {
	rs, err := listTelemetry(ctx, s.r, q)
	if err != nil {
		return store.TelemetrySummary{}, fmt.Errorf("query telemetry: %w", err)
	}
	return store.Summarize(rs), nil
}

func listTelemetry(ctx context.Context, db queryer, q store.TelemetryQuery) ([]store.TelemetryRollup, error) {
	if q.Devices != nil && len(q.Devices) == 0 {
		return nil, nil
	}
	var (
		where []string
		args  []any
	)
	if q.Model != "" {
		where, args = append(where, `model = ?`), append(args, q.Model)
	}
	if q.Version != "" {
		where, args = append(where, `version = ?`), append(args, q.Version)
	}
	if q.Devices != nil {
		// One JSON parameter instead of one per device: fleets exceed
		// SQLite's limit on bound parameters.
		devices, err := jsonText(q.Devices)
		if err != nil {
			return nil, err
		}
		where, args = append(where, `device IN (SELECT value FROM json_each(?))`), append(args, devices)
	}
	if !q.Since.IsZero() {
		where, args = append(where, `minute >= ?`), append(args, store.Minute(q.Since).UnixMicro())
	}
	if !q.Until.IsZero() {
		where, args = append(where, `minute < ?`), append(args, q.Until.UnixMicro())
	}
	query := `SELECT device, model, version, minute, reports, requests, compute_cpu_ms, compute_gpu_ms,
		cold_starts, cold_start_ms, queue_rejections, shadow_compared, shadow_agreed, shadow_max_abs_diff,
		errors_by_kind, latency, mixed_with, shadow_latency FROM telemetry_rollups`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	rows, err := db.QueryContext(ctx, query+` ORDER BY minute, device, model, version`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.TelemetryRollup
	for rows.Next() {
		var (
			r                                                           store.TelemetryRollup
			minute                                                      sql.NullInt64
			reports, requests, coldStarts, rejections, compared, agreed int64
			errs, lat, mixed, shadowLat                                 string
		)
		if err := rows.Scan(&r.Device, &r.Model, &r.Version, &minute, &reports, &requests,
			&r.ComputeMillis.CPU, &r.ComputeMillis.GPU, &coldStarts, &r.ColdStartMillis, &rejections,
			&compared, &agreed, &r.Shadow.MaxAbsDiff, &errs, &lat, &mixed, &shadowLat); err != nil {
			return nil, err
		}
		r.Minute = fromMicros(minute)
		r.Reports, r.Requests, r.ColdStarts, r.QueueRejections = uint64(reports), uint64(requests), uint64(coldStarts), uint64(rejections)
		r.Shadow.Compared, r.Shadow.Agreed = uint64(compared), uint64(agreed)
		for _, c := range []struct {
			col, text string
			dst       any
		}{
			{"errors_by_kind", errs, &r.Errors},
			{"latency", lat, &r.Latency},
			{"mixed_with", mixed, &r.MixedWith},
			{"shadow_latency", shadowLat, &r.Shadow.Latency},
		} {
			if err := fromJSON(c.col, c.text, c.dst); err != nil {
				return nil, err
			}
		}
		if len(r.Errors) == 0 {
			r.Errors = nil
		}
		if len(r.MixedWith) == 0 {
			r.MixedWith = nil
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
