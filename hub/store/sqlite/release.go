package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/manifest"
)

// PutRelease implements store.Store.
func (s *Store) PutRelease(ctx context.Context, r store.Release) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("put release: %w", err)
	}
	artifacts, err := jsonText(nonNilSlice(r.Artifacts))
	if err != nil {
		return fmt.Errorf("put release %s: %w", r.Ref(), err)
	}
	err = s.writeDurable(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO releases (name, version, manifest, signed, created, artifacts)
			VALUES (?, ?, ?, ?, ?, ?)`, r.Name, r.Version, r.Manifest, r.Signed, r.Created.UnixMicro(), artifacts)
		return err
	})
	if isConstraint(err) {
		return fmt.Errorf("put release %s: it already exists; push a new version: %w", r.Ref(), store.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("put release %s: %w", r.Ref(), err)
	}
	return nil
}

// SignRelease implements store.Store.
func (s *Store) SignRelease(ctx context.Context, name, version string, envelope []byte) error {
	ref := name + "@" + version
	if len(envelope) == 0 {
		return fmt.Errorf("sign release %s: empty envelope: %w", ref, store.ErrInvalid)
	}
	err := s.writeDurable(ctx, func(tx *sql.Tx) error {
		var signed bool
		err := tx.QueryRowContext(ctx, `SELECT signed FROM releases WHERE name = ? AND version = ?`, name, version).Scan(&signed)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if signed {
			return fmt.Errorf("already signed: %w", store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, `UPDATE releases SET manifest = ?, signed = 1 WHERE name = ? AND version = ?`, envelope, name, version)
		return err
	})
	if err != nil {
		return fmt.Errorf("sign release %s: %w", ref, err)
	}
	return nil
}

const releaseColumns = `name, version, manifest, signed, created, artifacts`

func scanRelease(row interface{ Scan(...any) error }) (store.Release, error) {
	var (
		r         store.Release
		created   sql.NullInt64
		artifacts string
	)
	if err := row.Scan(&r.Name, &r.Version, &r.Manifest, &r.Signed, &created, &artifacts); err != nil {
		return r, err
	}
	r.Created = fromMicros(created)
	if err := fromJSON("artifacts", artifacts, &r.Artifacts); err != nil {
		return r, err
	}
	return r, nil
}

// GetRelease implements store.Store.
func (s *Store) GetRelease(ctx context.Context, name, version string) (store.Release, error) {
	r, err := scanRelease(s.r.QueryRowContext(ctx, `SELECT `+releaseColumns+` FROM releases WHERE name = ? AND version = ?`, name, version))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Release{}, fmt.Errorf("get release %s@%s: %w", name, version, err)
	}
	return r, nil
}

// ListReleases implements store.Store.
func (s *Store) ListReleases(ctx context.Context, name string) ([]store.Release, error) {
	query, args := `SELECT `+releaseColumns+` FROM releases`, []any{}
	order := ` ORDER BY name, version`
	if name != "" {
		query, args = query+` WHERE name = ?`, append(args, name)
	}
	rows, err := s.r.QueryContext(ctx, query+order, args...)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	defer rows.Close()
	var out []store.Release
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			return nil, fmt.Errorf("list releases: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	// Semantic version order is not text order (1.10.0 > 1.9.0), so sort here.
	slices.SortStableFunc(out, func(a, b store.Release) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		c, err := manifest.CompareSemver(a.Version, b.Version)
		if err != nil {
			return strings.Compare(a.Version, b.Version)
		}
		return c
	})
	return out, nil
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
