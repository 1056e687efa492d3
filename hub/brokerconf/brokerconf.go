// Package brokerconf generates the access configuration that locks a
// production fleet down: a Mosquitto configuration with a TLS listener and an
// ACL file in which every device may touch only its own topics, an optional
// Mosquitto password file, and the read-only S3 policy for agents' artifact
// downloads (MinIO and AWS IAM share the policy language).
//
// Identities: with Auth "certificate" (the default) the broker requires a
// client certificate from the device CA and uses its common name as the MQTT
// user name (use_identity_as_username), so a device's identity is its device
// ID, and the hub's is HubIdentity ("fleethub"). With Auth "password" the
// user name is the device ID and the generator creates random passwords.
// Either way the ACL is written once with Mosquitto's %u pattern for all
// devices, plus explicit rules for factory bindings and other clients.
//
// Generation is pure: Render returns file contents and writes nothing; topic
// names come from internal/bus so they cannot drift from what the hub and
// agents use.
package brokerconf

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/pki"
)

// Auth modes.
const (
	// AuthCertificate identifies clients by their TLS client certificate's
	// common name.
	AuthCertificate = "certificate"
	// AuthPassword identifies clients by user name and password, over TLS
	// without client certificates.
	AuthPassword = "password"
)

// DefaultHubIdentity is the hub's MQTT identity: the common name of the
// client certificate the device CA issues the hub, or its user name with
// password authentication.
const DefaultHubIdentity = pki.DefaultHubClientName

// DefaultMaxQueuedMessages is how many messages Mosquitto queues per client.
// Mosquitto's default of 1000 also caps the retained messages delivered on
// subscription (mosquitto #2196): a hub subscribing to the retained state and
// online flags of thousands of devices needs two per device and more.
const DefaultMaxQueuedMessages = 100000

// Config describes the broker and the fleet's identities. The zero value is
// not useful; start from DefaultConfig.
type Config struct {
	// Prefix is the modelfleet topic prefix (bus.DefaultPrefix).
	Prefix string `yaml:"prefix" json:"prefix" usage:"modelfleet topic prefix"`
	// Auth is AuthCertificate or AuthPassword.
	Auth string `yaml:"auth" json:"auth" usage:"client authentication: certificate or password"`
	// HubIdentity is the hub's certificate common name or user name; it gets
	// full access under Prefix. No device may have this ID.
	HubIdentity string `yaml:"hub_identity" json:"hub_identity" usage:"the hub's certificate common name or user name"`
	// Listener is the MQTT over TLS listener.
	Listener Listener `yaml:"listener" json:"listener"`
	// PersistenceDir is where Mosquitto saves retained messages and
	// sessions; it must end with '/' in mosquitto.conf (added if missing).
	PersistenceDir string `yaml:"persistence_dir" json:"persistence_dir" usage:"directory of mosquitto.db"`
	// AutosaveSeconds is how often Mosquitto saves its database; retained
	// assignments and states since the last save are lost in a crash.
	AutosaveSeconds int `yaml:"autosave_seconds" json:"autosave_seconds" usage:"seconds between saves of the persistence database"`
	// MaxQueuedMessages per client; 0 means DefaultMaxQueuedMessages.
	MaxQueuedMessages int `yaml:"max_queued_messages" json:"max_queued_messages" usage:"messages queued per client (mosquitto #2196)"`
	// ACLFile and PasswordFile are the paths written into mosquitto.conf:
	// where the files will be on the broker host.
	ACLFile      string `yaml:"acl_file" json:"acl_file" usage:"path of the ACL file on the broker host"`
	PasswordFile string `yaml:"password_file" json:"password_file" usage:"path of the password file on the broker host (auth password)"`
	// Devices lists devices by ID with their labels. Needed for password
	// authentication (one password each) and for bindings chosen by label;
	// with certificates and no label bindings it may stay empty.
	Devices []Device `yaml:"devices" json:"devices,omitempty"`
	// Bindings grant devices access to factory topics their bindings use.
	Bindings []Binding `yaml:"bindings" json:"bindings,omitempty"`
	// Clients are other identities: inference clients, factory systems.
	Clients []Client `yaml:"clients" json:"clients,omitempty"`
	// Revoked are device IDs denied every topic, for a device whose
	// certificate is still valid but must not take part any more (lost,
	// stolen, decommissioned) until listener.crl_file revokes the
	// certificate itself. It does not stop the device from connecting.
	Revoked []string `yaml:"revoked" json:"revoked,omitempty"`
}

// Listener is the broker's TLS listener.
type Listener struct {
	// Port is the TCP port, 8883 by default (MQTT over TLS).
	Port int `yaml:"port" json:"port" usage:"MQTT over TLS port"`
	// Bind is the address to listen on; empty means all interfaces.
	Bind string `yaml:"bind" json:"bind,omitempty" usage:"address to listen on (empty: all)"`
	// CAFile is the device CA: client certificates must chain to it.
	CAFile string `yaml:"ca_file" json:"ca_file" usage:"CA certificate clients must chain to (PEM)"`
	// CertFile and KeyFile are the broker's server certificate and key.
	CertFile string `yaml:"cert_file" json:"cert_file" usage:"broker server certificate (PEM)"`
	KeyFile  string `yaml:"key_file" json:"key_file" usage:"broker server key (PEM)"`
	// CRLFile is an optional PEM certificate revocation list of the device
	// CA: revoked client certificates cannot connect.
	CRLFile string `yaml:"crl_file" json:"crl_file,omitempty" usage:"certificate revocation list of the device CA (PEM, optional)"`
}

// Device is one device of the fleet.
type Device struct {
	// ID is the device ID: certificate common name and MQTT user name.
	ID string `yaml:"id" json:"id"`
	// Labels select the device in bindings.
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
}

// Binding grants devices subscribe and publish access to factory topics.
// Topics may contain "{device}", replaced by each device's ID. A binding
// applies to the devices listed in Devices, plus those whose labels
// include every pair of Labels, or to every device with AllDevices.
type Binding struct {
	// Name says what the binding is for; it becomes a comment.
	Name string `yaml:"name" json:"name,omitempty"`
	// AllDevices applies the binding to every device (a %u pattern).
	AllDevices bool `yaml:"all_devices" json:"all_devices,omitempty"`
	// Devices are device IDs.
	Devices []string `yaml:"devices" json:"devices,omitempty"`
	// Labels select devices from Config.Devices.
	Labels map[string]string `yaml:"labels" json:"labels,omitempty"`
	// Subscribe are topic filters the devices may read: binding inputs.
	Subscribe []string `yaml:"subscribe" json:"subscribe,omitempty"`
	// Publish are topics the devices may write: binding outputs and the
	// reply_to topics of request/reply inference.
	Publish []string `yaml:"publish" json:"publish,omitempty"`
}

// Client is a non-device identity, e.g. a factory system sending inference
// requests. It gets exactly the listed access. With password
// authentication it gets a generated password.
type Client struct {
	// Name is the certificate common name or user name.
	Name string `yaml:"name" json:"name"`
	// Subscribe are topic filters the client may read.
	Subscribe []string `yaml:"subscribe" json:"subscribe,omitempty"`
	// Publish are topics the client may write, e.g.
	// "modelfleet/v1/devices/+/infer/#" to send inference requests.
	Publish []string `yaml:"publish" json:"publish,omitempty"`
}

// DefaultConfig returns the defaults: certificate authentication, port 8883,
// Debian's file locations.
func DefaultConfig() Config {
	return Config{
		Prefix:            bus.DefaultPrefix,
		Auth:              AuthCertificate,
		HubIdentity:       DefaultHubIdentity,
		Listener:          Listener{Port: 8883, CAFile: "/etc/mosquitto/certs/ca.pem", CertFile: "/etc/mosquitto/certs/server.pem", KeyFile: "/etc/mosquitto/certs/server-key.pem"},
		PersistenceDir:    "/var/lib/mosquitto/",
		AutosaveSeconds:   60,
		MaxQueuedMessages: DefaultMaxQueuedMessages,
		ACLFile:           "/etc/mosquitto/conf.d/modelfleet.acl",
		PasswordFile:      "/etc/mosquitto/conf.d/modelfleet.passwd",
	}
}

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid broker configuration")

// Validate reports every problem in c at once, naming the fields. All
// returned errors wrap ErrInvalid.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Auth != AuthCertificate && c.Auth != AuthPassword {
		bad("auth: %q is not %q or %q", c.Auth, AuthCertificate, AuthPassword)
	}
	if err := bus.ValidateName(c.HubIdentity); err != nil {
		bad("hub_identity: %w", err)
	}
	if strings.ContainsAny(c.Prefix, "+#") {
		bad("prefix: %q must not contain MQTT wildcards", c.Prefix)
	}
	if c.Listener.Port < 1 || c.Listener.Port > 65535 {
		bad("listener.port: %d is not a TCP port", c.Listener.Port)
	}
	for _, f := range []struct{ name, value string }{
		{"listener.cert_file", c.Listener.CertFile}, {"listener.key_file", c.Listener.KeyFile},
		{"acl_file", c.ACLFile}, {"persistence_dir", c.PersistenceDir},
	} {
		if f.value == "" {
			bad("%s: required", f.name)
		}
	}
	if c.Auth == AuthCertificate && c.Listener.CAFile == "" {
		bad("listener.ca_file: required with auth %s (client certificates must chain to it)", AuthCertificate)
	}
	if c.Auth == AuthPassword && c.PasswordFile == "" {
		bad("password_file: required with auth %s", AuthPassword)
	}
	if c.Auth == AuthPassword && len(c.Devices) == 0 {
		bad("devices: with auth %s list the devices in the config file; each gets a password", AuthPassword)
	}
	if c.MaxQueuedMessages < 0 || c.AutosaveSeconds < 0 {
		bad("max_queued_messages, autosave_seconds: must not be negative")
	}
	for i, id := range c.Revoked {
		if err := bus.ValidateName(id); err != nil {
			bad("revoked[%d]: %w", i, err)
		} else if id == c.HubIdentity {
			bad("revoked[%d]: %q is the hub identity", i, id)
		}
	}
	for _, v := range []string{c.Listener.CAFile, c.Listener.CertFile, c.Listener.KeyFile, c.Listener.CRLFile, c.ACLFile, c.PasswordFile, c.PersistenceDir, c.Listener.Bind} {
		if strings.ContainsAny(v, "\n\r") {
			bad("file paths and addresses must be one line: %q", v)
		}
	}
	seen := map[string]bool{c.HubIdentity: true}
	for i, d := range c.Devices {
		if err := bus.ValidateName(d.ID); err != nil {
			bad("devices[%d].id: %w", i, err)
		}
		if seen[d.ID] {
			bad("devices[%d].id: %q is used twice or is the hub identity", i, d.ID)
		}
		seen[d.ID] = true
	}
	for i, b := range c.Bindings {
		if !b.AllDevices && len(b.Devices) == 0 && len(b.Labels) == 0 {
			bad("bindings[%d]: choose devices with all_devices, devices or labels", i)
		}
		if b.AllDevices && (len(b.Devices) > 0 || len(b.Labels) > 0) {
			bad("bindings[%d]: all_devices excludes devices and labels", i)
		}
		for _, id := range b.Devices {
			if err := bus.ValidateName(id); err != nil {
				bad("bindings[%d].devices: %w", i, err)
			} else if id == c.HubIdentity {
				bad("bindings[%d].devices: %q is the hub identity", i, id)
			}
		}
		if len(b.Subscribe)+len(b.Publish) == 0 {
			bad("bindings[%d]: no subscribe or publish topics", i)
		}
		for _, t := range b.Subscribe {
			if err := c.checkTopic(t); err != nil {
				bad("bindings[%d].subscribe: %w", i, err)
			}
		}
		for _, t := range b.Publish {
			if err := c.checkTopic(t); err != nil {
				bad("bindings[%d].publish: %w", i, err)
			}
		}
	}
	for i, cl := range c.Clients {
		if err := bus.ValidateName(cl.Name); err != nil {
			bad("clients[%d].name: %w", i, err)
		}
		if seen[cl.Name] {
			bad("clients[%d].name: %q is also a device or the hub identity", i, cl.Name)
		}
		seen[cl.Name] = true
		for _, t := range append(slices.Clone(cl.Subscribe), cl.Publish...) {
			if err := checkFilter(t); err != nil {
				bad("clients[%d]: %w", i, err)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
}

// checkTopic checks a binding topic. Bindings are for factory topics: they
// must not reach under the modelfleet prefix, where they could read other
// devices' assignments or forge their state; the agent also refuses to
// publish replies there.
func (c Config) checkTopic(t string) error {
	if err := checkFilter(strings.ReplaceAll(t, "{device}", "x")); err != nil {
		return err
	}
	if reachesPrefix(t, bus.NewTopics(c.Prefix).Prefix()) {
		return fmt.Errorf("%q reaches topics under the modelfleet prefix %q; bindings are for factory topics only", t, bus.NewTopics(c.Prefix).Prefix())
	}
	return nil
}

// reachesPrefix reports whether filter matches the prefix itself or any
// topic under it.
func reachesPrefix(filter, prefix string) bool {
	f, p := strings.Split(filter, "/"), strings.Split(prefix, "/")
	for i, level := range p {
		if i >= len(f) {
			return false
		}
		switch f[i] {
		case "#":
			return true
		case "+", level:
		default:
			return false
		}
	}
	return true
}

// checkFilter checks that f is a syntactically valid MQTT topic filter on
// one line (MQTT 3.1.1 §4.7).
func checkFilter(f string) error {
	if f == "" || len(f) > 65535 || strings.ContainsAny(f, "\x00\n\r") {
		return fmt.Errorf("topic %q: empty, too long or contains control characters", f)
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("topic %q: '#' must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return fmt.Errorf("topic %q: a wildcard must fill a whole level", f)
		}
	}
	return nil
}

// Files are the generated broker files.
type Files struct {
	// MosquittoConf is mosquitto.conf.
	MosquittoConf []byte
	// ACL is the acl_file.
	ACL []byte
	// PasswordFile is the password_file; nil with certificate auth.
	PasswordFile []byte
	// Passwords are the generated passwords (identity → password) for
	// password auth, to hand to the hub, devices and clients; nil with
	// certificate auth.
	Passwords map[string]string
	// Identities lists the identities in Passwords, hub first.
	Identities []string
}

// Render generates the broker files for c. With password auth it generates
// one random password per identity (hub, devices, clients) and the password
// file. It returns an error wrapping ErrInvalid when c is invalid.
func Render(c Config) (Files, error) {
	if err := c.Validate(); err != nil {
		return Files{}, err
	}
	f := Files{MosquittoConf: MosquittoConf(c), ACL: ACL(c)}
	if c.Auth == AuthPassword {
		f.Identities = append(f.Identities, c.HubIdentity)
		for _, d := range c.Devices {
			f.Identities = append(f.Identities, d.ID)
		}
		for _, cl := range c.Clients {
			f.Identities = append(f.Identities, cl.Name)
		}
		f.Passwords = map[string]string{}
		for _, id := range f.Identities {
			pw, err := randomPassword()
			if err != nil {
				return Files{}, err
			}
			f.Passwords[id] = pw
		}
		pf, err := passwordFile(f.Identities, f.Passwords)
		if err != nil {
			return Files{}, err
		}
		f.PasswordFile = pf
	}
	return f, nil
}

// MosquittoConf renders mosquitto.conf (mosquitto.conf(5), Mosquitto 2.0)
// for a valid c: global settings, file locations, the listener and its
// options.
func MosquittoConf(c Config) []byte {
	var b strings.Builder
	b.WriteString("# Generated by `fleethub broker config`; see docs/security.md.\n")
	b.WriteString("# Every client authenticates; each device may touch only its own topics (acl_file).\n\n")
	lines := []string{
		"",
		"persistence_location " + strings.TrimSuffix(c.PersistenceDir, "/") + "/",
		"acl_file " + c.ACLFile,
	}
	if c.Auth == AuthPassword {
		lines = append(lines, "password_file "+c.PasswordFile)
	}
	listen := "listener " + strconv.Itoa(c.Listener.Port)
	if c.Listener.Bind != "" {
		listen += " " + c.Listener.Bind
	}
	lines = append(lines, "", "# MQTT over TLS only: there is no plain-text listener.", listen)
	if c.Listener.CAFile != "" {
		lines = append(lines, "cafile "+c.Listener.CAFile)
	}
	lines = append(lines, "certfile "+c.Listener.CertFile, "keyfile "+c.Listener.KeyFile)
	if c.Listener.CRLFile != "" {
		lines = append(lines, "crlfile "+c.Listener.CRLFile)
	}
	global, listener := settings(c)
	for _, l := range global {
		b.WriteString(l + "\n")
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	for _, l := range listener {
		b.WriteString(l + "\n")
	}
	return []byte(b.String())
}

func settings(c Config) (global, listener []string) {
	maxQueued := c.MaxQueuedMessages
	if maxQueued == 0 {
		maxQueued = DefaultMaxQueuedMessages
	}
	global = []string{
		"# One set of security settings for all listeners.",
		"per_listener_settings false",
		"allow_anonymous false",
		"",
		"# Retained assignments, roots, states and online flags survive restarts.",
		"persistence true",
		"persistence_file mosquitto.db",
		"autosave_interval " + strconv.Itoa(c.AutosaveSeconds),
		"",
		"# The hub subscribes to the retained state of every device: Mosquitto's default",
		"# of 1000 queued messages per client would cut that replay short (mosquitto #2196).",
		"max_queued_messages " + strconv.Itoa(maxQueued),
		"max_inflight_messages 1000",
		"queue_qos0_messages false",
		"",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"log_type information",
		"connection_messages true",
		"log_timestamp true",
		"log_timestamp_format %Y-%m-%dT%H:%M:%S",
	}
	listener = []string{"tls_version tlsv1.2"}
	if c.Auth == AuthCertificate {
		listener = append(listener,
			"# Clients must present a certificate from the device CA; its common name",
			"# (the device ID, or "+c.HubIdentity+" for the hub) is the user name the ACL sees.",
			"require_certificate true",
			"use_identity_as_username true",
		)
	} else {
		listener = append(listener,
			"# Clients log in with user name (device ID) and password; no client certificates.",
			"require_certificate false",
		)
	}
	return global, listener
}

// ACL renders the acl_file for a valid c.
//
// Mosquitto grants an operation when any rule allows it: "pattern" rules
// apply to every client with %u replaced by its user name, "topic" rules
// after a "user" line to that user only ("topic" rules before the first
// "user" line would apply to anonymous clients only, so there are none). Everything else is denied: a denied
// publish is dropped silently (the publisher still gets its PUBACK), and
// messages are delivered only to clients allowed to read them. Mosquitto
// 2.0.11 grants the subscription itself (SUBACK 0x01) even when no message
// on it may be read, so a denied subscription looks like a silent one.
func ACL(c Config) []byte {
	t := bus.NewTopics(c.Prefix)
	const u = "%u"
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\n") }
	line("# Generated by `fleethub broker config`; see docs/security.md.")
	line("# Clients are identified by certificate common name or user name (%u).")
	line("")
	line("# Every client may read the signed root. A pattern, because \"topic\" lines before")
	line("# the first \"user\" line apply to anonymous clients only; Mosquitto warns that it")
	line("# has no %u, which is intended.")
	line("pattern read " + t.Root())
	line("")
	line("# Every device: its own assignment and the inference requests addressed to it ...")
	line("pattern read " + t.Assignment(u))
	line("pattern read " + t.Infer(u, "#"))
	line("# ... and it reports only about itself.")
	for _, topic := range []string{t.State(u), t.Online(u), t.Telemetry(u), t.Events(u)} {
		line("pattern write " + topic)
	}
	var perDevice []Binding
	for _, bd := range c.Bindings {
		if !bd.AllDevices {
			perDevice = append(perDevice, bd)
			continue
		}
		line("")
		line("# Binding for all devices" + named(bd.Name))
		for _, s := range bd.Subscribe {
			line("pattern read " + strings.ReplaceAll(s, "{device}", u))
		}
		for _, p := range bd.Publish {
			line("pattern write " + strings.ReplaceAll(p, "{device}", u))
		}
	}

	line("")
	line("# The hub: everything under the prefix (assignments, root, device reports).")
	line("user " + c.HubIdentity)
	line("topic readwrite " + t.Prefix() + "/#")

	grants := map[string][]string{}
	var ids []string
	for _, bd := range perDevice {
		for _, id := range c.bindingDevices(bd) {
			if _, ok := grants[id]; !ok {
				ids = append(ids, id)
			}
			grants[id] = append(grants[id], "# binding"+named(bd.Name))
			for _, s := range bd.Subscribe {
				grants[id] = append(grants[id], "topic read "+strings.ReplaceAll(s, "{device}", id))
			}
			for _, p := range bd.Publish {
				grants[id] = append(grants[id], "topic write "+strings.ReplaceAll(p, "{device}", id))
			}
		}
	}
	for _, id := range ids {
		line("")
		line("user " + id)
		for _, g := range grants[id] {
			line(g)
		}
	}
	for _, id := range c.Revoked {
		line("")
		line("# Revoked: deny rules come before every grant, patterns included.")
		line("user " + id)
		line("topic deny #")
	}
	for _, cl := range c.Clients {
		line("")
		line("# Client " + cl.Name)
		line("user " + cl.Name)
		for _, s := range cl.Subscribe {
			line("topic read " + s)
		}
		for _, p := range cl.Publish {
			line("topic write " + p)
		}
	}
	return []byte(b.String())
}

func named(name string) string {
	if name == "" {
		return ":"
	}
	return " " + name + ":"
}

// bindingDevices returns the IDs a per-device binding applies to, in a
// stable order: the listed ones, then the label matches in Devices order.
func (c Config) bindingDevices(bd Binding) []string {
	var ids []string
	add := func(id string) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, id := range bd.Devices {
		add(id)
	}
	if len(bd.Labels) > 0 {
		for _, d := range c.Devices {
			if matches(d.Labels, bd.Labels) {
				add(d.ID)
			}
		}
	}
	return ids
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
