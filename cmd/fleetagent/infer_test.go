package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInferCommand checks the client side of `fleetagent infer`: what it
// sends and how it renders answers and errors (the server side is tested
// against the real agent in agent/).
func TestInferCommand(t *testing.T) {
	var gotPath, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotPath, gotBody = r.URL.Path, string(b)
		if strings.Contains(r.URL.Path, "/nope/") {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"model \"nope\" is not served on this device"}`)
			return
		}
		io.WriteString(w, `{"model_name":"m","model_version":"1.0.0","outputs":[{"name":"score","shape":[1,1],"datatype":"FP32","data":[0.25]}]}`)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	req := filepath.Join(t.TempDir(), "req.json")
	if err := os.WriteFile(req, []byte(`{"inputs":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		stdin   string
		want    string
		wantErr string
	}{
		{name: "text", args: []string{"infer", "m", "--addr", addr, "--input", req}, want: "m 1.0.0\n  score FP32 [1 1]: [0.25]\n"},
		{name: "json from stdin", args: []string{"infer", "m", "--addr", addr, "--input", "-", "-o", "json"}, stdin: `{"inputs":[]}`, want: `"model_version":"1.0.0"`},
		{name: "server error", args: []string{"infer", "nope", "--addr", addr, "--input", req}, wantErr: `404 Not Found: model "nope" is not served`},
		{name: "no input", args: []string{"infer", "m", "--addr", addr}, wantErr: "--input is required"},
		{name: "agent down", args: []string{"infer", "m", "--addr", "127.0.0.1:1", "--input", req}, wantErr: "is `fleetagent run` running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := newRootCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetIn(strings.NewReader(tt.stdin))
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Fatalf("output %q does not contain %q", out.String(), tt.want)
			}
			if gotPath != "/v2/models/m/infer" || gotBody != `{"inputs":[]}` {
				t.Errorf("sent %s %q", gotPath, gotBody)
			}
		})
	}
}
