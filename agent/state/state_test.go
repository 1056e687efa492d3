package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	f, err := NewFile(filepath.Join(t.TempDir(), "sub", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := f.Load()
	if err != nil {
		t.Fatalf("load missing file: %v", err)
	}
	if len(s.Models) != 0 {
		t.Fatalf("missing file: got %d models, want 0", len(s.Models))
	}
	s.Models["m"] = &Model{
		Active:   &Install{Version: "1.0.0", Digest: "aa", Mode: "active", Manifest: []byte(`{"x":1}`)},
		Previous: &Install{Version: "0.9.0", Digest: "bb"},
		Pending:  &Install{Version: "1.1.0", Digest: "cc"},
		Phase:    PhaseDownloading,
	}
	s.Trust = []byte(`{"sequence":7}`)
	if err := f.Save(s); err != nil {
		t.Fatal(err)
	}
	got, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
	}
	if want := map[string]bool{"aa": true, "bb": true, "cc": true}; !reflect.DeepEqual(got.Digests(), want) {
		t.Errorf("Digests() = %v, want %v", got.Digests(), want)
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(f.Path()))
	if len(entries) != 1 {
		t.Errorf("directory has %d entries, want only the state file", len(entries))
	}
}

func TestLoadCorrupt(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{"truncated", `{"schema":1,"models":{`},
		{"wrong schema", `{"schema":99,"models":{}}`},
		{"not json", "\x00\x01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f, _ := NewFile(p)
			if _, err := f.Load(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load() error = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestCloneIsDeep(t *testing.T) {
	s := New()
	s.Models["m"] = &Model{Active: &Install{Version: "1"}}
	c := s.Clone()
	c.Models["m"].Active.Version = "2"
	if s.Models["m"].Active.Version != "1" {
		t.Fatal("Clone shares memory with the original")
	}
}
