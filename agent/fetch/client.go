package fetch

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ClientOptions describe an S3-compatible endpoint.
type ClientOptions struct {
	// Endpoint is host[:port], or a URL whose scheme decides TLS.
	Endpoint string
	Region   string
	// AccessKey and SecretKey are static credentials; when empty the chain
	// of AWS environment variables, ~/.aws/credentials, MinIO environment
	// variables and instance metadata is used.
	AccessKey, SecretKey, SessionToken string
	// Insecure selects plain HTTP.
	Insecure bool
	// CAFile is a PEM bundle to verify the endpoint, added to system roots.
	CAFile string
}

// NewClient returns a minio-go client for opts.
func NewClient(opts ClientOptions) (*minio.Client, error) {
	endpoint, secure := opts.Endpoint, !opts.Insecure
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") {
		endpoint, secure = u.Host, u.Scheme == "https"
	}
	endpoint = strings.TrimSuffix(endpoint, "/")
	var creds *credentials.Credentials
	if opts.AccessKey != "" {
		creds = credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, opts.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.EnvMinio{},
			&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		})
	}
	mo := &minio.Options{Creds: creds, Secure: secure, Region: opts.Region}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 ca_file %s: no PEM certificate found", opts.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		mo.Transport = tr
	}
	c, err := minio.New(endpoint, mo)
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %q: %w", opts.Endpoint, err)
	}
	return c, nil
}
