package fetch

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Store is a content-addressed blob directory: a verified blob lives at
// <dir>/<sha256 hex>, a download in progress at <dir>/<sha256 hex>.part with
// its resume record <dir>/<sha256 hex>.part.json. Only verified bytes are
// ever renamed to a final name, so a blob's presence means it is complete.
type Store struct {
	dir string
}

// NewStore opens (creating if needed) the blob directory dir.
func NewStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path returns where the blob with the given digest lives (whether or not it
// exists). The digest must be validated with ValidDigest first.
func (s *Store) Path(digest string) string { return filepath.Join(s.dir, digest) }

func (s *Store) partPath(digest string) string { return s.Path(digest) + ".part" }
func (s *Store) metaPath(digest string) string { return s.Path(digest) + ".part.json" }

// Has reports whether the verified blob is present.
func (s *Store) Has(digest string) bool {
	fi, err := os.Stat(s.Path(digest))
	return err == nil && fi.Mode().IsRegular()
}

// ValidDigest reports whether d is a lower-case hex sha256 digest, so that it
// is safe to use as a file name.
func ValidDigest(d string) bool {
	if len(d) != 64 || strings.ToLower(d) != d {
		return false
	}
	_, err := hex.DecodeString(d)
	return err == nil
}

// GC removes every blob and partial download whose digest is not in keep
// and returns the digests removed. The caller keeps the active, previous and
// pending versions' digests.
func (s *Store) GC(keep map[string]bool) ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("blob gc: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		digest, _, _ := strings.Cut(name, ".")
		if !ValidDigest(digest) || keep[digest] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		if name == digest {
			removed = append(removed, digest)
		}
	}
	return removed, errors.Join(errs...)
}
