package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelfleet/modelfleet/hub/api"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/cli"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/internal/pki"
)

// caSubdir is where the device CA lives in the key directory unless
// enroll.ca_dir says otherwise. It is a subdirectory because the key
// directory's top level holds only ed25519 signing keys.
const caSubdir = "ca"

// serverEnrollConfig is the enroll: section of the hub configuration:
// the device CA and what enrolled agents are told. Example:
//
//	enroll:
//	  ca_dir: /etc/modelfleet/keys/ca
//	  brokers: [ssl://broker.example.com:8883]
//	  broker_ca_file: /etc/modelfleet/broker-ca.pem
//	  s3_access_key: agent-readonly
//	  s3_secret_key: …
type serverEnrollConfig struct {
	CADir             string   `yaml:"ca_dir" usage:"device CA directory (default: hub.key_dir/ca, created on first start when missing)"`
	CertValidityHours int      `yaml:"cert_validity_hours" usage:"validity of device certificates in hours (0: 8760, one year)"`
	Brokers           []string `yaml:"brokers" usage:"broker URLs handed to enrolled agents (default: hub.mqtt.brokers)"`
	BrokerCAFile      string   `yaml:"broker_ca_file" usage:"PEM CA bundle enrolled agents verify the broker with (default: hub.mqtt.ca_file; none: system roots)"`
	S3Endpoint        string   `yaml:"s3_endpoint" usage:"S3 endpoint handed to agents (default: s3.endpoint, with s3.region, s3.insecure, s3.ca_file)"`
	S3Region          string   `yaml:"s3_region" usage:"S3 region handed to agents (default: s3.region)"`
	S3AccessKey       string   `yaml:"s3_access_key" usage:"READ-ONLY S3 access key handed to agents (empty: agents use their own credential chain)"`
	S3SecretKey       string   `yaml:"s3_secret_key" usage:"READ-ONLY S3 secret key handed to agents"`
	ReservedIDs       []string `yaml:"reserved_ids" usage:"MQTT identities never given to devices besides the hub's own (e.g. other clients' certificate names)"`
}

// newEnrollment loads (or, on first start, creates) the device CA and
// returns the API's enrollment settings.
func newEnrollment(cfg serverConfig, st api.EnrollStore, log *slog.Logger) (*api.Enrollment, error) {
	ec := cfg.Enroll
	caDir := ec.CADir
	if caDir == "" {
		caDir = filepath.Join(cfg.Hub.KeyDir, caSubdir)
	}
	ca, created, err := pki.LoadOrInitCA(caDir, pki.Options{})
	if err != nil {
		return nil, fmt.Errorf("enroll.ca_dir: %w", err)
	}
	if created {
		log.Info("created the device CA and the hub's MQTT client certificate", "dir", caDir,
			"ca", filepath.Join(caDir, pki.CACertFile), "hub_client_cert", filepath.Join(caDir, pki.HubClientCertFile))
	}
	e := &api.Enrollment{
		Store: st, CA: ca, Brokers: ec.Brokers, TopicPrefix: cfg.Hub.TopicPrefix,
		CertValidity: time.Duration(ec.CertValidityHours) * time.Hour,
		RootFile:     filepath.Join(cfg.Hub.KeyDir, keys.RootFile),
	}
	if len(e.Brokers) == 0 {
		e.Brokers = cfg.Hub.MQTT.Brokers
	}
	// The hub's own MQTT identity is never a device's, whatever it is called.
	e.ReservedIDs = append(e.ReservedIDs, ec.ReservedIDs...)
	if f := cfg.Hub.MQTT.CertFile; f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("hub.mqtt.cert_file: %w", err)
		}
		cert, err := pki.ParseCertificatePEM(raw)
		if err != nil {
			return nil, fmt.Errorf("hub.mqtt.cert_file %s: %w", f, err)
		}
		e.ReservedIDs = append(e.ReservedIDs, cert.Subject.CommonName)
	}
	if e.TopicPrefix == "" {
		e.TopicPrefix = bus.DefaultPrefix
	}
	if f := firstNonEmpty(ec.BrokerCAFile, cfg.Hub.MQTT.CAFile); f != "" {
		if e.BrokerCA, err = os.ReadFile(f); err != nil {
			return nil, fmt.Errorf("enroll.broker_ca_file: %w", err)
		}
	}
	if endpoint := firstNonEmpty(ec.S3Endpoint, cfg.S3.Endpoint); endpoint != "" {
		e.S3 = &enroll.S3{
			Endpoint: endpoint, Region: firstNonEmpty(ec.S3Region, cfg.S3.Region), Bucket: cfg.S3.Bucket,
			AccessKey: ec.S3AccessKey, SecretKey: ec.S3SecretKey, Insecure: cfg.S3.Insecure,
		}
		if cfg.S3.CAFile != "" {
			ca, err := os.ReadFile(cfg.S3.CAFile)
			if err != nil {
				return nil, fmt.Errorf("s3.ca_file: %w", err)
			}
			e.S3.CA = string(ca)
		}
	}
	return e, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// deviceCAFiles is what initDeviceCA created.
type deviceCAFiles struct {
	Dir           string `json:"dir"`
	CACert        string `json:"ca_cert"`
	HubClientCert string `json:"hub_client_cert"`
	HubClientKey  string `json:"hub_client_key"`
	HubClientName string `json:"hub_client_name"`
}

// initDeviceCA creates the device CA and the hub's client certificate
// (common name hubClient) in the key directory (`fleethub keys init`).
func initDeviceCA(keyDir, hubClient string) (*deviceCAFiles, error) {
	dir := filepath.Join(keyDir, caSubdir)
	ca, err := pki.InitCA(dir, pki.Options{})
	if err != nil {
		return nil, err
	}
	paths, err := ca.IssueHubClient(hubClient, 0)
	if err != nil {
		return nil, err
	}
	return &deviceCAFiles{Dir: dir, CACert: filepath.Join(dir, pki.CACertFile), HubClientCert: paths[0], HubClientKey: paths[1], HubClientName: hubClient}, nil
}

func newDevicesEnrollTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll-token [--labels k=v,...] [--ttl 1h] [--device-id ID]",
		Short: "Make a one-time token that enrolls one device (fleetagent enroll)",
		Long: `Make a one-time enrollment token. On the device, ` + "`fleetagent enroll --hub URL\n--token TOKEN`" + ` uses it to get a client certificate (common name = device
ID) and its configuration. The token works once and expires after --ttl; the
hub keeps only its hash, so it is shown this one time. The enrolled device
gets --labels as hub labels. With --device-id the token enrolls that device
only, and may re-enroll a registered one; without it the device chooses an
unregistered ID or the hub makes one up.`,
		Example: `  fleethub devices enroll-token --labels site=plant-a,line=3
  fleethub devices enroll-token --device-id press-01 --ttl 24h -o json`,
		Args: cobra.NoArgs,
	}
	cf := addClientFlags(cmd)
	labels := cmd.Flags().StringToString("labels", nil, "labels of the enrolled device, k=v,k2=v2")
	ttl := cmd.Flags().Duration("ttl", api.DefaultEnrollTokenTTL, "how long the token is valid")
	deviceID := cmd.Flags().String("device-id", "", "the only device ID the token enrolls")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		if *ttl < time.Second || *ttl > api.MaxEnrollTokenTTL {
			return fmt.Errorf("--ttl %s: want 1s to %s", *ttl, api.MaxEnrollTokenTTL)
		}
		tok, err := c.CreateEnrollToken(cmd.Context(), api.EnrollTokenRequest{
			Labels: *labels, TTLSeconds: int64(ttl.Seconds()), DeviceID: *deviceID,
		})
		if err != nil {
			return err
		}
		if cf.json() {
			return cli.WriteJSON(cmd.OutOrStdout(), tok)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintln(w, tok.Token)
		fmt.Fprintf(w, "\ntoken %s expires %s; device %s; labels %s\n", tok.ID, tok.Expires.Local().Format(time.RFC3339),
			firstNonEmpty(tok.DeviceID, "(chosen at enrollment)"), labelString(tok.Labels))
		fmt.Fprintf(w, "It is shown only now and works once. On the device run:\n  fleetagent enroll --hub %s --token %s\n",
			strings.TrimRight(c.BaseURL, "/"), tok.Token)
		return nil
	}
	return cmd
}

// serveAPI serves the API on ln, over TLS when api.tls_cert_file is set:
// devices enrolling over the network need HTTPS, as the answer carries
// their trust root and credentials.
func serveAPI(srv *http.Server, ln net.Listener, c serverAPIConfig) error {
	if c.TLSCertFile == "" && c.TLSKeyFile == "" {
		return srv.Serve(ln)
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		return errors.New("api.tls_cert_file, api.tls_key_file: set both or neither")
	}
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	return srv.ServeTLS(ln, c.TLSCertFile, c.TLSKeyFile)
}

// apiScheme is "https" when the API serves TLS, else "http".
func apiScheme(c serverAPIConfig) string {
	if c.TLSCertFile != "" {
		return "https"
	}
	return "http"
}
