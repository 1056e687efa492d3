package enroll

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxResponseBytes bounds the hub's answer (certificates, CA bundles and
// root.json are a few KiB).
const maxResponseBytes = 1 << 20

// ErrHubCertificate: the hub's TLS certificate did not verify against the
// CA given (or the system roots).
var ErrHubCertificate = errors.New("the hub's TLS certificate is not trusted")

// HTTPClient returns the client that talks to hubURL: for https, it trusts
// only the PEM bundle caFile when given, else the system roots. Plain http
// is refused except to a loopback address, because the answer carries the
// trust root and credentials.
func HTTPClient(hubURL, caFile string, timeout time.Duration) (*http.Client, error) {
	u, err := url.Parse(hubURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("hub URL %q: want https://host:port", hubURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	switch u.Scheme {
	case "https":
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			raw, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("hub CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(raw) {
				return nil, fmt.Errorf("hub CA %s: no PEM certificate found", caFile)
			}
			cfg.RootCAs = pool
		}
		tr.TLSClientConfig = cfg
	case "http":
		if caFile != "" {
			return nil, fmt.Errorf("hub CA %s given but the hub URL %s is not https", caFile, hubURL)
		}
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("hub URL %s: plain http is only allowed to a loopback address; the hub's answer carries the trust root and credentials, use https", hubURL)
		}
	default:
		return nil, fmt.Errorf("hub URL %s: scheme %q, want https", hubURL, u.Scheme)
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Enroll sends req to the hub at hubURL (its API base URL) and returns the
// hub's answer. A refusal is an *Error (errors.Is with ErrTokenUnknown,
// ErrTokenUsed, ErrTokenExpired); an untrusted hub certificate wraps
// ErrHubCertificate. Errors never contain the token.
func Enroll(ctx context.Context, hc *http.Client, hubURL string, req Request) (*Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	endpoint := strings.TrimRight(hubURL, "/") + Path
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("hub URL %q: %w", hubURL, err)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	resp, err := hc.Do(hr)
	if err != nil {
		var uae x509.UnknownAuthorityError
		var hne x509.HostnameError
		var cie x509.CertificateInvalidError
		var tve *tls.CertificateVerificationError
		if errors.As(err, &uae) || errors.As(err, &hne) || errors.As(err, &cie) || errors.As(err, &tve) {
			return nil, fmt.Errorf("%w: %v (pass the CA that signed the hub's certificate with --hub-ca)", ErrHubCertificate, err)
		}
		return nil, fmt.Errorf("reach the hub at %s: %w", hubURL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read the hub's answer: %w", err)
	}
	if len(raw) > maxResponseBytes {
		return nil, fmt.Errorf("the hub's answer is larger than %d bytes", maxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{StatusCode: resp.StatusCode}
		if json.Unmarshal(raw, &e.Body) != nil || e.Body.Error == "" {
			e.Body.Error = fmt.Sprintf("HTTP %d from %s (is this the fleethub API?)", resp.StatusCode, endpoint)
		}
		return nil, e
	}
	var out Response
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode the hub's answer: %w", err)
	}
	return &out, nil
}
