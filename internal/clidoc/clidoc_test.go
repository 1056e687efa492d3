package clidoc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func tree() *cobra.Command {
	root := &cobra.Command{Use: "tool", Short: "A tool"}
	root.PersistentFlags().String("config", "", "config file")
	get := &cobra.Command{Use: "get NAME", Short: "Get a thing", Example: "  tool get x", RunE: func(*cobra.Command, []string) error { return nil }}
	get.Flags().BoolP("watch", "w", false, "keep watching")
	hidden := &cobra.Command{Use: "secret", Hidden: true, Run: func(*cobra.Command, []string) {}}
	root.AddCommand(get, hidden)
	return root
}

func TestRender(t *testing.T) {
	pages := Render(tree())
	if len(pages) != 2 {
		t.Fatalf("pages = %d, want 2 (hidden commands are left out): %v", len(pages), pages)
	}
	get := string(pages["tool_get.md"])
	for _, want := range []string{"# tool get", "tool get NAME [flags]", "tool get x", "--watch", "--config", "[tool](tool.md)"} {
		if !strings.Contains(get, want) {
			t.Errorf("tool_get.md lacks %q:\n%s", want, get)
		}
	}
	if root := string(pages["tool.md"]); !strings.Contains(root, "[tool get](tool_get.md) — Get a thing") {
		t.Errorf("tool.md does not link its subcommand:\n%s", root)
	}
}

func TestSync(t *testing.T) {
	dir := t.TempDir()
	if err := Sync(dir, tree(), false); err == nil || !strings.Contains(err.Error(), "missing page tool.md") {
		t.Fatalf("empty dir: err = %v, want missing pages", err)
	}
	if err := Sync(dir, tree(), true); err != nil {
		t.Fatal(err)
	}
	if err := Sync(dir, tree(), false); err != nil {
		t.Fatalf("after update: %v", err)
	}
	// An edited page and a page of a removed command are both reported.
	if err := os.WriteFile(filepath.Join(dir, "tool_get.md"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tool_gone.md"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Pages of another tree in the same directory are not touched.
	if err := os.WriteFile(filepath.Join(dir, "other.md"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Sync(dir, tree(), false)
	if err == nil || !strings.Contains(err.Error(), "outdated page tool_get.md") || !strings.Contains(err.Error(), "stale page tool_gone.md") {
		t.Fatalf("err = %v, want outdated and stale pages", err)
	}
	if err := Sync(dir, tree(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tool_gone.md")); !os.IsNotExist(err) {
		t.Errorf("stale page not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.md")); err != nil {
		t.Errorf("page of another tree removed: %v", err)
	}
}
