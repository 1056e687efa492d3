package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCandidates(t *testing.T) {
	defaults := DefaultLibraryPaths()
	tests := []struct {
		name    string
		cfgPath string
		env     string
		want    []string
	}{
		{name: "explicit path wins over env", cfgPath: "/opt/ort/lib.so", env: "/env/lib.so", want: []string{"/opt/ort/lib.so"}},
		{name: "env when no explicit path", env: "/env/lib.so", want: []string{"/env/lib.so"}},
		{name: "defaults when neither", want: defaults},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == EnvLibraryPath {
					return tt.env
				}
				return ""
			}
			var got []string
			for _, c := range candidates(tt.cfgPath, getenv) {
				got = append(got, c.path)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("candidates = %q, want %q", got, tt.want)
			}
		})
	}
	if last := defaults[len(defaults)-1]; last != LibraryName {
		t.Errorf("last default = %q, want the bare name %q for the system library path", last, LibraryName)
	}
}

// TestLoadNothingFound checks the operator's message when no candidate
// exists: every path tried, and what to do.
func TestLoadNothingFound(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "a", LibraryName)
	_, err := load([]candidate{
		{missing, "default"},
		{"libmodelfleet-test-missing.so.1", "default"},
	})
	if !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("load = %v, want ErrLibraryNotFound", err)
	}
	for _, want := range []string{missing, "libmodelfleet-test-missing.so.1", "make deps", EnvLibraryPath, "--ort-lib"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestLoadStopsAtFirstExisting checks that a broken library in an earlier
// location is reported rather than skipped in favour of a later one.
func TestLoadStopsAtFirstExisting(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, LibraryName)
	if err := os.WriteFile(junk, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := load([]candidate{
		{filepath.Join(dir, "missing.so"), "default"},
		{junk, "default"},
		{LibraryName, "default"},
	})
	if !errors.Is(err, ErrLibraryUnusable) || !strings.Contains(err.Error(), junk) {
		t.Fatalf("load = %v, want ErrLibraryUnusable naming %s", err, junk)
	}
}
