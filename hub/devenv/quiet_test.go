package devenv

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// TestS3StdoutQuiet starts and stops the embedded S3 endpoint with stdout
// redirected: versitygw prints start-up lines there by itself ("Using
// sidecar directory…", "No IAM service configured…"), which would land in
// front of `fleethub dev`'s banner. StartS3 must configure them away; its
// own lifecycle lines go to the Logger only.
func TestS3StdoutQuiet(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	restored := false
	restore := func() {
		if !restored {
			os.Stdout = stdout
			w.Close()
			restored = true
		}
	}
	t.Cleanup(restore)
	printed := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(r)
		printed <- b
	}()

	var logged bytes.Buffer
	s, err := StartS3(t.Context(), S3Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Bucket: "models",
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		restore()
		t.Fatalf("StartS3: %v", err)
	}
	if ok, err := mustMinio(t, s).BucketExists(t.Context(), "models"); err != nil || !ok {
		t.Errorf("BucketExists(models) = %v, %v; want true", ok, err)
	}
	closeErr := s.Close()
	restore()
	if closeErr != nil {
		t.Errorf("Close: %v", closeErr)
	}
	if out := <-printed; len(out) > 0 {
		t.Errorf("the embedded S3 endpoint printed to stdout:\n%s", out)
	}
	if !strings.Contains(logged.String(), "embedded s3 endpoint listening") {
		t.Errorf("lifecycle lines missing from the logger:\n%s", logged.String())
	}
}
