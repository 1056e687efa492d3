package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// run executes the fleethub root command with args and returns stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("fleethub %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

const unsignedManifest = `{
  "name": "vibration",
  "version": "1.2.0",
  "created": "2026-02-28T12:00:00Z",
  "artifacts": [
    {"variant": "cpu", "key": "models/vibration/1.2.0/cpu.onnx",
     "sha256": "abababababababababababababababababababababababababababababababab",
     "size": 4194304, "format": "onnx"}
  ],
  "inputs": [{"name": "x", "element_type": "float32", "shape": [-1, 128]}],
  "outputs": [{"name": "score", "element_type": "float32", "shape": [-1, 1]}]
}
`

func keyOf(t *testing.T, dir, role string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, role+"-*.pem"))
	if err != nil || len(m) != 1 {
		t.Fatalf("%s keys in %s: %v %v", role, dir, m, err)
	}
	return m[0]
}

func TestKeysInitSignVerify(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "keys")
	out := mustRun(t, "keys", "init", "--dir", dir, "--root-keys", "3", "--root-threshold", "2")
	if !strings.Contains(out, "root.json (version 1") {
		t.Fatalf("init output:\n%s", out)
	}
	if _, err := run(t, "keys", "init", "--dir", dir); err == nil {
		t.Fatal("second keys init succeeded")
	}

	in := filepath.Join(tmp, "vibration.json")
	if err := os.WriteFile(in, []byte(unsignedManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	signed := filepath.Join(tmp, "vibration.signed.json")
	out = mustRun(t, "manifest", "sign", "--key", keyOf(t, dir, "release"), in, "--out", signed)
	if !strings.Contains(out, "signed vibration@1.2.0") {
		t.Fatalf("sign output:\n%s", out)
	}
	rootPath := filepath.Join(dir, keys.RootFile)

	out = mustRun(t, "manifest", "verify", "--root", rootPath, signed)
	if !strings.Contains(out, "ok    signatures") || !strings.Contains(out, "verified model vibration@1.2.0") {
		t.Fatalf("verify output:\n%s", out)
	}
	out = mustRun(t, "manifest", "verify", "--root", rootPath, "-o", "json", "--variants", "cuda,cpu", signed)
	var rep struct {
		OK       bool     `json:"ok"`
		Checks   []string `json:"checks"`
		Artifact struct {
			Variant string `json:"variant"`
		} `json:"artifact"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if !rep.OK || rep.Artifact.Variant != "cpu" || len(rep.Checks) < 5 {
		t.Fatalf("json report %+v", rep)
	}

	// Signed by the director key: wrong role, non-zero exit, JSON says why.
	wrong := filepath.Join(tmp, "wrong.json")
	mustRun(t, "manifest", "sign", "--key", keyOf(t, dir, "director"), in, "--out", wrong)
	out, err := run(t, "manifest", "verify", "--root", rootPath, "-o", "json", wrong)
	if err == nil {
		t.Fatal("verify of a director-signed manifest succeeded")
	}
	var fail struct {
		OK     bool `json:"ok"`
		Failed struct {
			Check string `json:"check"`
			Error string `json:"error"`
		} `json:"failed"`
	}
	if err := json.Unmarshal([]byte(out), &fail); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if fail.OK || fail.Failed.Check != "signatures" || fail.Failed.Error != manifest.ErrWrongRole.Error() {
		t.Fatalf("failure report %+v", fail)
	}

	// A tampered file fails with a bad signature.
	b, _ := os.ReadFile(signed)
	tampered := filepath.Join(tmp, "tampered.json")
	os.WriteFile(tampered, bytes.Replace(b, []byte(`"size":4194304`), []byte(`"size":4194305`), 1), 0o644)
	out, err = run(t, "manifest", "verify", "--root", rootPath, tampered)
	if err == nil || !strings.Contains(out, "FAIL  signatures: bad signature") {
		t.Fatalf("tampered: err %v\n%s", err, out)
	}

	// A group-readable key is refused with the fix in the message.
	os.Chmod(keyOf(t, dir, "release"), 0o644)
	if _, err := run(t, "manifest", "sign", "--key", keyOf(t, dir, "release"), in); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("insecure key: %v", err)
	}
	os.Chmod(keyOf(t, dir, "release"), 0o600)

	// Rotation replaces the release key; the old signature stops counting.
	out = mustRun(t, "keys", "rotate", "--dir", dir, "--replace", "release", "-o", "json")
	if !strings.Contains(out, `"version": 2`) {
		t.Fatalf("rotate output:\n%s", out)
	}
	if _, err := run(t, "manifest", "verify", "--root", rootPath, signed); err == nil {
		t.Fatal("manifest signed by a retired key still verifies")
	}
	if _, err := run(t, "keys", "rotate", "--dir", dir, "--release-keys", "2"); err == nil {
		t.Fatal("--release-keys without --replace release accepted")
	}
}

func TestAssignmentVerify(t *testing.T) {
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "keys")
	mustRun(t, "keys", "init", "--dir", dir)
	rootPath := filepath.Join(dir, keys.RootFile)
	ctx := context.Background()

	release, err := keys.LoadSigner(keyOf(t, dir, "release"))
	if err != nil {
		t.Fatal(err)
	}
	director, err := keys.LoadSigner(keyOf(t, dir, "director"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.ParseModelManifest([]byte(unsignedManifest))
	if err != nil {
		t.Fatal(err)
	}
	mraw, err := manifest.Sign(ctx, m, release)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	a := &manifest.Assignment{
		Device: "edge-7", Sequence: 5, Issued: now, Expires: now.Add(time.Hour),
		Models: []manifest.ModelAssignment{{Manifest: mraw, Mode: manifest.ModeActive}},
	}
	araw, err := manifest.Sign(ctx, a, director)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tmp, "assignment.json")
	if err := os.WriteFile(path, araw, 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr bool
		want    string
	}{
		{name: "valid", args: []string{"--device", "edge-7"}, want: "verified assignment for device edge-7, sequence 5"},
		{name: "valid json", args: []string{"--device", "edge-7", "-o", "json"}, want: `"ok": true`},
		{name: "other device", args: []string{"--device", "edge-8"}, wantErr: true, want: "FAIL  device: assignment for another device"},
		{name: "no artifact", args: []string{"--device", "edge-7", "--variants", "cuda"}, wantErr: true, want: "FAIL  models[0].artifact"},
		{name: "replay against state", args: []string{"--device", "edge-7", "--state", writeState(t, tmp, 5)}, wantErr: true, want: "FAIL  sequence"},
		{name: "bad output format", args: []string{"--device", "edge-7", "-o", "yaml"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"assignment", "verify", "--root", rootPath, path}, tt.args...)
			out, err := run(t, args...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v\n%s", err, tt.wantErr, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Fatalf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}

func writeState(t *testing.T, dir string, seq uint64) string {
	t.Helper()
	p := filepath.Join(dir, "state.json")
	b, _ := json.Marshal(manifest.State{Sequence: seq})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
