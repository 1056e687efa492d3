// Package enrollment is the device side of enrollment (`fleetagent
// enroll`): it makes the device's private key, which never leaves the
// device, asks the hub for a certificate with a one-time token (the wire
// protocol is internal/enroll), checks the answer, and installs what the hub
// sent as files plus an agent configuration that `fleetagent run` uses as
// is.
//
// Files, in CertDir (by default the directory of the configuration file):
//
//	device-key.pem   the device's ECDSA P-256 key (secret, see below)
//	device.pem       its client certificate, common name = device ID
//	broker-ca.pem    the CA bundle to verify the broker with (if the hub sent one)
//	s3-ca.pem        the CA bundle to verify S3 with (if the hub sent one)
//	root.json        the trust root
//
// and the configuration file itself (secret too: it may hold the S3 secret
// key). Secret files are mode 0600, or 0640 with the group of their
// directory when that group is not root's: the packages make /etc/modelfleet
// root:modelfleet 0750 so that the agent's service user can read its key
// and configuration, which root writes. Every file is written atomically
// (internal/atomicfile), the configuration last, so an interrupted
// enrollment never leaves a configuration pointing at missing files.
//
// An existing enrollment (the key or certificate file present) is never
// replaced unless Options.Force is set; that check happens before the token
// is spent. A configuration file alone (the template a package installs) is
// not an enrollment: it is replaced, and kept as <config>.pre-enroll.
package enrollment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/modelfleet/modelfleet/agent"
	"github.com/modelfleet/modelfleet/internal/atomicfile"
	"github.com/modelfleet/modelfleet/internal/config"
	"github.com/modelfleet/modelfleet/internal/enroll"
	"github.com/modelfleet/modelfleet/internal/pki"
	"github.com/modelfleet/modelfleet/manifest"
)

// File names in Options.CertDir.
const (
	KeyFile      = "device-key.pem"
	CertFile     = "device.pem"
	BrokerCAFile = "broker-ca.pem"
	S3CAFile     = "s3-ca.pem"
	RootFile     = "root.json"
)

// DefaultTimeout bounds the exchange with the hub.
const DefaultTimeout = 30 * time.Second

// ErrAlreadyEnrolled: the device has an enrollment and Force is not set.
var ErrAlreadyEnrolled = errors.New("this device is already enrolled")

// Options configures Enroll.
type Options struct {
	// HubURL is the hub's API URL, e.g. https://hub.example.com:8400.
	HubURL string
	// Token is the one-time enrollment token.
	Token string
	// HubCAFile is a PEM bundle to verify the hub's TLS certificate with;
	// empty means the system roots.
	HubCAFile string
	// DeviceID is the ID to ask for; empty lets the hub (or the token) decide.
	DeviceID string
	// ConfigPath is the agent configuration to write; empty means
	// agent.DefaultConfigPath.
	ConfigPath string
	// CertDir receives key, certificates and root.json; empty means the
	// directory of ConfigPath.
	CertDir string
	// DataDir goes into the configuration; empty means the agent default.
	DataDir string
	// Force replaces an existing enrollment.
	Force bool
	// HTTPClient talks to the hub; nil means enroll.HTTPClient(HubURL,
	// HubCAFile, DefaultTimeout).
	HTTPClient *http.Client
	// Logger receives progress; nil means slog.Default(). Nothing secret is
	// logged.
	Logger *slog.Logger
}

// Result describes an installed enrollment. It holds no secret.
type Result struct {
	DeviceID           string            `json:"device_id"`
	Labels             map[string]string `json:"labels,omitempty"`
	ConfigPath         string            `json:"config"`
	KeyFile            string            `json:"key_file"`
	CertFile           string            `json:"cert_file"`
	BrokerCAFile       string            `json:"broker_ca_file,omitempty"`
	RootFile           string            `json:"trust_root"`
	CertificateExpires time.Time         `json:"certificate_expires"`
	Brokers            []string          `json:"brokers"`
	TopicPrefix        string            `json:"topic_prefix"`
	S3Endpoint         string            `json:"s3_endpoint,omitempty"`
	// PreviousConfig is where the configuration found at ConfigPath was
	// kept, if there was one.
	PreviousConfig string `json:"previous_config,omitempty"`
	// Warnings are things to fix before `fleetagent run`.
	Warnings []string `json:"warnings,omitempty"`
}

// paths resolves the file locations of opts.
func (o *Options) paths() error {
	if o.ConfigPath == "" {
		o.ConfigPath = agent.DefaultConfigPath
	}
	var err error
	if o.ConfigPath, err = filepath.Abs(o.ConfigPath); err != nil {
		return err
	}
	if o.CertDir == "" {
		o.CertDir = filepath.Dir(o.ConfigPath)
	}
	if o.CertDir, err = filepath.Abs(o.CertDir); err != nil {
		return err
	}
	if o.DataDir == "" {
		o.DataDir = agent.DefaultConfig().DataDir
	}
	o.DataDir, err = filepath.Abs(o.DataDir)
	return err
}

// Enroll enrolls this device with the hub and installs the result. It
// returns an error wrapping ErrAlreadyEnrolled without contacting the hub
// when an enrollment exists and Force is not set; refusals of the hub wrap
// enroll.ErrTokenUnknown, ErrTokenUsed or ErrTokenExpired, an untrusted hub
// certificate enroll.ErrHubCertificate.
func Enroll(ctx context.Context, opts Options) (*Result, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.HubURL == "" {
		return nil, errors.New("no hub URL: pass --hub https://HUB:8400")
	}
	if err := enroll.CheckTokenFormat(opts.Token); err != nil {
		return nil, err
	}
	if opts.DeviceID != "" {
		if err := manifest.ValidateDeviceID(opts.DeviceID); err != nil {
			return nil, fmt.Errorf("--device-id: %w", err)
		}
	}
	if err := opts.paths(); err != nil {
		return nil, err
	}
	res := &Result{
		ConfigPath: opts.ConfigPath,
		KeyFile:    filepath.Join(opts.CertDir, KeyFile),
		CertFile:   filepath.Join(opts.CertDir, CertFile),
		RootFile:   filepath.Join(opts.CertDir, RootFile),
	}
	if !opts.Force {
		for _, p := range []string{res.KeyFile, res.CertFile} {
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("%w: %s exists (pass --force to enroll again and replace it)", ErrAlreadyEnrolled, p)
			}
		}
	}
	hc := opts.HTTPClient
	if hc == nil {
		var err error
		if hc, err = enroll.HTTPClient(opts.HubURL, opts.HubCAFile, DefaultTimeout); err != nil {
			return nil, err
		}
	}

	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, opts.DeviceID)
	if err != nil {
		return nil, err
	}
	log.Info("enrolling with the hub", "hub", opts.HubURL)
	resp, err := enroll.Enroll(ctx, hc, opts.HubURL, enroll.Request{Token: strings.TrimSpace(opts.Token), CSR: string(csr), DeviceID: opts.DeviceID})
	if err != nil {
		return nil, err
	}
	if err := check(resp, key.Public()); err != nil {
		return nil, fmt.Errorf("the hub's answer is not usable: %w", err)
	}
	keyPEM, err := pki.MarshalKey(key)
	if err != nil {
		return nil, err
	}

	res.DeviceID, res.Labels, res.CertificateExpires = resp.DeviceID, resp.Labels, resp.CertificateExpires
	res.Brokers, res.TopicPrefix = resp.Brokers, resp.TopicPrefix
	cfg := agent.DefaultConfig()
	cfg.DeviceID, cfg.Labels = resp.DeviceID, resp.Labels
	cfg.MQTT.Brokers = resp.Brokers
	if resp.TopicPrefix != "" {
		cfg.MQTT.TopicPrefix = resp.TopicPrefix
	}
	cfg.MQTT.CertFile, cfg.MQTT.KeyFile = res.CertFile, res.KeyFile
	cfg.DataDir, cfg.TrustRoot = opts.DataDir, res.RootFile
	files := []installFile{
		{res.KeyFile, keyPEM, secretMode},
		{res.CertFile, []byte(resp.Certificate), 0o644},
		{res.RootFile, resp.Root, 0o644},
	}
	if resp.BrokerCA != "" {
		res.BrokerCAFile = filepath.Join(opts.CertDir, BrokerCAFile)
		cfg.MQTT.CAFile = res.BrokerCAFile
		files = append(files, installFile{res.BrokerCAFile, []byte(resp.BrokerCA), 0o644})
	}
	if s3 := resp.S3; s3 != nil {
		res.S3Endpoint = s3.Endpoint
		cfg.S3 = agent.S3Config{Endpoint: s3.Endpoint, Region: s3.Region, AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, Insecure: s3.Insecure}
		if s3.CA != "" {
			cfg.S3.CAFile = filepath.Join(opts.CertDir, S3CAFile)
			files = append(files, installFile{cfg.S3.CAFile, []byte(s3.CA), 0o644})
		}
	} else {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the hub handed out no S3 settings: set s3.endpoint (and credentials) in %s before `fleetagent run`", res.ConfigPath))
	}
	yml, err := renderConfig(cfg, resp.S3 != nil)
	if err != nil {
		return nil, err
	}

	for _, dir := range []string{opts.CertDir, filepath.Dir(opts.ConfigPath)} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("install enrollment: %w", err)
		}
	}
	for _, f := range files {
		if err := install(f); err != nil {
			return nil, fmt.Errorf("install enrollment (the token is spent; enroll again with a new token and --force): %w", err)
		}
	}
	// Check the configuration exactly as `fleetagent config validate` will
	// read it, before it is put in place.
	if resp.S3 != nil {
		if err := validate(yml); err != nil {
			return nil, fmt.Errorf("the configuration the hub's answer makes is invalid (the hub's enroll settings need fixing):\n%w", err)
		}
	}
	if old, err := os.ReadFile(res.ConfigPath); err == nil {
		// A configuration without an enrollment, e.g. the package's
		// template: keep it for the settings enrollment does not make.
		res.PreviousConfig = res.ConfigPath + ".pre-enroll"
		if err := install(installFile{res.PreviousConfig, old, secretMode}); err != nil {
			return nil, fmt.Errorf("install enrollment (the token is spent; enroll again with a new token and --force): keep the old configuration: %w", err)
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("the previous configuration is kept as %s: copy any setting you changed in it (serving, bindings, labels) into %s", res.PreviousConfig, res.ConfigPath))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("install enrollment: %w", err)
	}
	if err := install(installFile{res.ConfigPath, yml, secretMode}); err != nil {
		return nil, fmt.Errorf("install enrollment (the token is spent; enroll again with a new token and --force): %w", err)
	}
	log.Info("enrolled", "device", res.DeviceID, "config", res.ConfigPath, "certificate_expires", res.CertificateExpires)
	return res, nil
}

// installFile is one file of an enrollment.
type installFile struct {
	path string
	data []byte
	mode os.FileMode // secretMode for the key and the configuration
}

// secretMode marks a file only its owner, and the group of its directory
// when that is not root's, may read.
const secretMode os.FileMode = 0o600

// install writes f atomically. A secret file in a directory whose group is
// not root's (the packages' root:modelfleet /etc/modelfleet) is given that
// group and mode 0640, so the agent's service user can read it; it is never
// readable by others.
func install(f installFile) error {
	if err := atomicfile.Write(f.path, f.data, f.mode); err != nil {
		return err
	}
	if f.mode != secretMode {
		return nil
	}
	gid, ok := dirGroup(filepath.Dir(f.path))
	if !ok || gid == 0 {
		return nil
	}
	if err := os.Chown(f.path, -1, gid); err != nil {
		return fmt.Errorf("give %s to the group of its directory: %w", f.path, err)
	}
	return os.Chmod(f.path, 0o640)
}

// check verifies the hub's answer before anything is written: the
// certificate is for our key and device ID and chains to the device CA, and
// root.json is a valid self-signed root.
func check(resp *enroll.Response, pub any) error {
	if err := manifest.ValidateDeviceID(resp.DeviceID); err != nil {
		return err
	}
	cert, err := pki.ParseCertificatePEM([]byte(resp.Certificate))
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	if !pki.PublicKeysEqual(cert.PublicKey, pub) {
		return errors.New("certificate: not for this device's key")
	}
	if cert.Subject.CommonName != resp.DeviceID {
		return fmt.Errorf("certificate: common name %q, want the device ID %q", cert.Subject.CommonName, resp.DeviceID)
	}
	ca, err := pki.ParseCertificatePEM([]byte(resp.DeviceCA))
	if err != nil {
		return fmt.Errorf("device CA: %w", err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("certificate: not signed by the device CA: %w", err)
	}
	if len(resp.Brokers) == 0 {
		return errors.New("no broker URL (the hub's enroll.brokers is empty)")
	}
	if _, err := manifest.NewVerifier(resp.Root, manifest.Config{}); err != nil {
		return fmt.Errorf("root.json: %w", err)
	}
	return nil
}

// fileConfig is the part of agent.Config an enrollment sets; everything
// else keeps its default and stays out of the file.
type fileConfig struct {
	DeviceID  string            `yaml:"device_id"`
	Labels    map[string]string `yaml:"labels,omitempty"`
	MQTT      fileMQTT          `yaml:"mqtt"`
	S3        *fileS3           `yaml:"s3,omitempty"`
	DataDir   string            `yaml:"data_dir"`
	TrustRoot string            `yaml:"trust_root"`
}

type fileMQTT struct {
	Brokers     []string `yaml:"brokers"`
	CAFile      string   `yaml:"ca_file,omitempty"`
	CertFile    string   `yaml:"cert_file"`
	KeyFile     string   `yaml:"key_file"`
	TopicPrefix string   `yaml:"topic_prefix"`
}

type fileS3 struct {
	Endpoint  string `yaml:"endpoint"`
	Region    string `yaml:"region,omitempty"`
	AccessKey string `yaml:"access_key,omitempty"`
	SecretKey string `yaml:"secret_key,omitempty"`
	Insecure  bool   `yaml:"insecure,omitempty"`
	CAFile    string `yaml:"ca_file,omitempty"`
}

func renderConfig(cfg agent.Config, withS3 bool) ([]byte, error) {
	fc := fileConfig{
		DeviceID: cfg.DeviceID, Labels: cfg.Labels,
		MQTT: fileMQTT{Brokers: cfg.MQTT.Brokers, CAFile: cfg.MQTT.CAFile, CertFile: cfg.MQTT.CertFile,
			KeyFile: cfg.MQTT.KeyFile, TopicPrefix: cfg.MQTT.TopicPrefix},
		DataDir: cfg.DataDir, TrustRoot: cfg.TrustRoot,
	}
	if withS3 {
		fc.S3 = &fileS3{Endpoint: cfg.S3.Endpoint, Region: cfg.S3.Region, AccessKey: cfg.S3.AccessKey,
			SecretKey: cfg.S3.SecretKey, Insecure: cfg.S3.Insecure, CAFile: cfg.S3.CAFile}
	}
	var b bytes.Buffer
	b.WriteString("# Written by `fleetagent enroll`. Keep it unreadable to others: it may hold the S3 secret key.\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(fc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// validate decodes yml the way fleetagent reads its configuration file
// (strictly, over the defaults) and validates the result.
func validate(yml []byte) error {
	cfg := agent.DefaultConfig()
	if err := config.DecodeYAML(bytes.NewReader(yml), &cfg); err != nil {
		return err
	}
	return cfg.Validate()
}
