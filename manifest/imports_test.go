package manifest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsStdlibOnly keeps manifest/ pure: everything it imports,
// directly or not, must come from the standard library.
func TestImportsStdlibOnly(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const self = "github.com/modelfleet/modelfleet/manifest"
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, std, _ := strings.Cut(line, " ")
		n++
		if path != self && std != "true" {
			t.Errorf("manifest depends on non-standard package %s", path)
		}
		if strings.HasPrefix(path, "net") || path == "os/exec" {
			t.Errorf("manifest depends on %s: it must not do network or process I/O", path)
		}
	}
	if n < 2 {
		t.Fatalf("go list returned too little: %q", out)
	}

	// Direct imports: no file, network or process I/O.
	out, err = exec.Command(gobin, "list", "-f", "{{join .Imports \"\\n\"}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, path := range strings.Fields(string(out)) {
		switch {
		case path == "os", path == "io/fs", path == "syscall", path == "os/exec", strings.HasPrefix(path, "net"):
			t.Errorf("manifest imports %s: it works on []byte only", path)
		}
	}
}
