// Package state persists what the agent has installed and what it runs: per
// model the active, previous and pending version, plus the trust state
// (last accepted assignment sequence, current root). The whole state is one
// JSON document written atomically (temp file, fsync, rename, fsync dir), so
// a kill -9 or power loss at any instant leaves either the old or the new
// state on disk. On start the agent reloads it and serves the last active
// models without waiting for the hub.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/modelfleet/modelfleet/internal/atomicfile"
)

// SchemaVersion is the version of the on-disk format.
const SchemaVersion = 1

// Phase is where a model version is in its life on this device. The values
// are the ones reported to the hub.
type Phase string

// Phases reported for a model.
const (
	PhaseDownloading Phase = "downloading"
	PhaseVerifying   Phase = "verifying"
	PhaseWarming     Phase = "warming"
	PhaseActive      Phase = "active"
	PhaseFailed      Phase = "failed"
	PhaseRolledBack  Phase = "rolled-back"
	PhaseRemoved     Phase = "removed"
)

// Install is one installed (or being installed) version of a model.
type Install struct {
	Version string `json:"version"`
	// Digest is the sha256 of the artifact in the blob store.
	Digest string `json:"digest"`
	// Variant is the artifact variant chosen for this device ("cpu", "cuda").
	Variant string `json:"variant"`
	// Manifest is the signed model manifest envelope, kept so the agent can
	// reload the model after a restart without the hub.
	Manifest json.RawMessage `json:"manifest,omitempty"`
	// Mode is "active" or "shadow".
	Mode string `json:"mode"`
	// ShadowSamplePPM is, for a shadow install, the share of requests (parts
	// per million; 0 means all) that also run on it.
	ShadowSamplePPM uint32 `json:"shadow_sample_ppm,omitempty"`
}

// Model is the state of one model name.
type Model struct {
	Active   *Install `json:"active,omitempty"`
	Previous *Install `json:"previous,omitempty"`
	Pending  *Install `json:"pending,omitempty"`
	Phase    Phase    `json:"phase"`
	// Error explains a failed or rolled-back phase.
	Error string `json:"error,omitempty"`
}

// State is everything the agent persists.
type State struct {
	Schema int `json:"schema"`
	// Root is the currently trusted signed root (raw envelope); empty means
	// the enrolled root from the configuration.
	Root json.RawMessage `json:"root,omitempty"`
	// Trust is the verifier's last accepted state, opaque to this package.
	Trust json.RawMessage `json:"trust,omitempty"`
	// Assignment is the last accepted signed assignment (raw envelope).
	Assignment json.RawMessage `json:"assignment,omitempty"`
	// Models by name; a model's shadow candidate is kept under
	// "<name>@shadow" (model names cannot contain '@').
	Models map[string]*Model `json:"models"`
}

// New returns an empty state.
func New() *State { return &State{Schema: SchemaVersion, Models: map[string]*Model{}} }

// Digests returns every digest the state references (active, previous and
// pending of every model): what blob garbage collection must keep.
func (s *State) Digests() map[string]bool {
	keep := map[string]bool{}
	for _, m := range s.Models {
		for _, in := range []*Install{m.Active, m.Previous, m.Pending} {
			if in != nil && in.Digest != "" {
				keep[in.Digest] = true
			}
		}
	}
	return keep
}

// Names returns the model names in sorted order.
func (s *State) Names() []string {
	names := make([]string, 0, len(s.Models))
	for n := range s.Models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Clone returns a deep copy, so a caller can publish a snapshot while the
// original changes.
func (s *State) Clone() *State {
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("state: marshal: %v", err)) // only plain data: cannot fail
	}
	c := New()
	if err := json.Unmarshal(b, c); err != nil {
		panic(fmt.Sprintf("state: unmarshal: %v", err))
	}
	return c
}

// ErrCorrupt reports a state file that exists but cannot be decoded.
var ErrCorrupt = errors.New("state file is corrupt")

// File is the state file at one path.
type File struct {
	path string
}

// NewFile returns the state file at path, creating its directory and
// removing temporary files left by an interrupted write.
func NewFile(path string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	// Temporary files of writes interrupted by a crash: never the state.
	stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, p := range stale {
		os.Remove(p)
	}
	return &File{path: path}, nil
}

// Path returns the file's path.
func (f *File) Path() string { return f.path }

// Load reads the state; a missing file is an empty state. A file that
// cannot be decoded returns ErrCorrupt: the agent refuses to guess, since
// the file is only ever replaced atomically.
func (f *File) Load() (*State, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, os.ErrNotExist) {
		return New(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	s := New()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("load state %s: %w: %v", f.path, ErrCorrupt, err)
	}
	if s.Schema != SchemaVersion {
		return nil, fmt.Errorf("load state %s: %w: schema %d, this agent understands %d", f.path, ErrCorrupt, s.Schema, SchemaVersion)
	}
	if s.Models == nil {
		s.Models = map[string]*Model{}
	}
	return s, nil
}

// Save atomically replaces the state file with s.
func (f *File) Save(s *State) error {
	s.Schema = SchemaVersion
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return atomicfile.Write(f.path, append(b, '\n'), 0o640)
}
