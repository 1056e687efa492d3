package enroll_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/internal/enroll"
)

func TestToken(t *testing.T) {
	a, err := enroll.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := enroll.NewToken()
	if a == b {
		t.Fatal("two tokens are equal")
	}
	if err := enroll.CheckTokenFormat(a); err != nil {
		t.Errorf("CheckTokenFormat(new token): %v", err)
	}
	if !bytes.Equal(enroll.HashToken(a), enroll.HashToken(" "+a+"\n")) {
		t.Error("pasted white space changes the hash")
	}
	if bytes.Equal(enroll.HashToken(a), enroll.HashToken(b)) {
		t.Error("different tokens hash alike")
	}
	for _, bad := range []string{"", "mfe_", "abc", a[:len(a)-1], "xyz_" + a[4:], a + "!"} {
		if err := enroll.CheckTokenFormat(bad); err == nil {
			t.Errorf("CheckTokenFormat(%q) accepted it", bad)
		}
	}
}

func TestHTTPClient(t *testing.T) {
	tests := []struct {
		name, url, ca string
		wantErr       string
	}{
		{"https", "https://hub.example:8400", "", ""},
		{"http loopback", "http://127.0.0.1:8400", "", ""},
		{"http localhost", "http://localhost:8400", "", ""},
		{"http remote", "http://hub.example:8400", "", "loopback"},
		{"CA with http", "http://127.0.0.1:8400", "/some/ca.pem", "not https"},
		{"missing CA file", "https://hub.example", "/nonexistent/ca.pem", "hub CA"},
		{"other scheme", "ftp://hub.example", "", "want https"},
		{"no host", "https://", "", "want https://host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := enroll.HTTPClient(tt.url, tt.ca, 0)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("HTTPClient: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("HTTPClient: %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
