// Package clidoc renders a cobra command tree as Markdown reference pages,
// one file per command, for docs/cli/. The pages are checked in and a test
// in each cmd package keeps them in step with the code (Sync).
package clidoc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
)

// Render returns the Markdown page of root and of every visible command
// under it, keyed by file name ("fleethub_rollout_start.md").
func Render(root *cobra.Command) map[string][]byte {
	pages := map[string][]byte{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		pages[fileName(c)] = page(c)
		for _, sub := range visible(c) {
			walk(sub)
		}
	}
	walk(root)
	return pages
}

// Sync compares the pages of root with the files named root.Name()*.md in
// dir. With update it rewrites changed pages and removes stale ones;
// otherwise it returns an error listing every difference.
func Sync(dir string, root *cobra.Command, update bool) error {
	want := Render(root)
	have, err := filepath.Glob(filepath.Join(dir, root.Name()+"*.md"))
	if err != nil {
		return err
	}
	var diffs []string
	for _, p := range have {
		name := filepath.Base(p)
		if _, ok := want[name]; ok {
			continue
		}
		if update {
			if err := os.Remove(p); err != nil {
				return err
			}
			continue
		}
		diffs = append(diffs, "stale page "+name)
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		cur, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if bytes.Equal(cur, want[name]) {
			continue
		}
		if update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, want[name], 0o644); err != nil {
				return err
			}
			continue
		}
		if cur == nil {
			diffs = append(diffs, "missing page "+name)
		} else {
			diffs = append(diffs, "outdated page "+name)
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%s is out of date (run `make docs`): %s", dir, strings.Join(diffs, ", "))
	}
	return nil
}

func fileName(c *cobra.Command) string {
	return strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
}

// visible returns c's subcommands that belong in the reference, sorted.
func visible(c *cobra.Command) []*cobra.Command {
	var out []*cobra.Command
	for _, sub := range c.Commands() {
		if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
			continue
		}
		out = append(out, sub)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

func page(c *cobra.Command) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "# %s\n\n", c.CommandPath())
	if c.Short != "" {
		fmt.Fprintf(&b, "%s\n\n", c.Short)
	}
	if long := strings.TrimSpace(c.Long); long != "" {
		fmt.Fprintf(&b, "%s\n\n", long)
	}
	if c.Runnable() {
		fmt.Fprintf(&b, "## Usage\n\n```\n%s\n```\n\n", c.UseLine())
	}
	if ex := strings.TrimRight(c.Example, " \n"); ex != "" {
		fmt.Fprintf(&b, "## Examples\n\n```\n%s\n```\n\n", ex)
	}
	if fs := c.NonInheritedFlags(); fs.HasAvailableFlags() {
		fmt.Fprintf(&b, "## Flags\n\n```\n%s```\n\n", fs.FlagUsages())
	}
	if fs := c.InheritedFlags(); fs.HasAvailableFlags() {
		fmt.Fprintf(&b, "## Flags inherited from parent commands\n\n```\n%s```\n\n", fs.FlagUsages())
	}
	subs := visible(c)
	if len(subs) > 0 {
		b.WriteString("## Commands\n\n")
		for _, sub := range subs {
			fmt.Fprintf(&b, "- [%s](%s) — %s\n", sub.CommandPath(), fileName(sub), sub.Short)
		}
		b.WriteString("\n")
	}
	if p := c.Parent(); p != nil {
		fmt.Fprintf(&b, "See also: [%s](%s)\n", p.CommandPath(), fileName(p))
	}
	return append(bytes.TrimRight(b.Bytes(), "\n"), '\n')
}
