package manifest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Model modes of an assignment entry.
const (
	// ModeActive serves the model.
	ModeActive = "active"
	// ModeShadow runs the model beside the active one of the same name on a
	// sample of requests and reports agreement, without serving its results.
	ModeShadow = "shadow"
)

// PPM is the denominator of the rate fields: 1,000,000 parts per million is 100 %.
const PPM = 1_000_000

// Assignment tells one device which models to run (role director). Its JSON
// form is the "signed" member of an assignment envelope.
type Assignment struct {
	// Schema is SchemaV1; Sign fills it in.
	Schema string `json:"schema"`
	// Type is KindAssignment; Sign fills it in.
	Type string `json:"type"`
	// Device is the device ID: 1–128 of [A-Za-z0-9._:-], starting with a
	// letter or digit.
	Device string `json:"device"`
	// Sequence goes up with every assignment for the device, starting at 1.
	Sequence uint64 `json:"sequence"`
	// Issued is when the hub signed the assignment (RFC 3339).
	Issued time.Time `json:"issued"`
	// Expires is when the assignment stops being valid (RFC 3339); the hub
	// refreshes it well before.
	Expires time.Time `json:"expires"`
	// Models lists what the device runs; empty means nothing.
	Models []ModelAssignment `json:"models"`
}

// ModelAssignment is one model entry of an Assignment.
type ModelAssignment struct {
	// Manifest is the release-signed model manifest envelope, embedded as a
	// JSON object and verified separately against the release role.
	Manifest json.RawMessage `json:"manifest"`
	// Mode is ModeActive or ModeShadow.
	Mode string `json:"mode"`
	// ShadowSamplePPM is, for a shadow entry, the share of requests (parts
	// per million) also sent to the shadow model; 0 means every request.
	ShadowSamplePPM uint32 `json:"shadow_sample_ppm,omitempty"`
	// Bindings connect MQTT topics to an active model.
	Bindings []Binding `json:"bindings,omitempty"`
	// MaxErrorRatePPM is the error rate (parts per million of requests)
	// above which the agent rolls the model back; 0 means no limit.
	MaxErrorRatePPM uint32 `json:"max_error_rate_ppm,omitempty"`
	// AllowDowngrade lets this entry carry a version lower than the one last
	// accepted for the model: an explicit rollback by the hub.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
}

// Binding routes MQTT messages through a model.
type Binding struct {
	// Input is an MQTT topic filter (wildcards + and # allowed).
	Input string `json:"input"`
	// Output is the topic template for results; {N} is replaced by the
	// topic level N (1-based) of the input topic. Empty means no output.
	Output string `json:"output,omitempty"`
}

// Kind implements Document.
func (a *Assignment) Kind() string { return KindAssignment }

func (a *Assignment) setHeader() { a.Schema, a.Type = SchemaV1, KindAssignment }

// Ref returns "device D sequence N" for messages.
func (a *Assignment) Ref() string {
	return "device " + a.Device + " sequence " + strconv.FormatUint(a.Sequence, 10)
}

// ValidateDeviceID checks a device ID. It returns an error wrapping ErrMalformed.
func ValidateDeviceID(id string) error {
	if !validIdent(id, 128, "._:-", true) {
		return malformed(fmt.Sprintf("device ID %q: want 1-128 of [A-Za-z0-9._:-] starting with a letter or digit", id))
	}
	return nil
}

// Validate checks the format rules of an assignment that can be checked
// without opening the embedded manifests. It returns an error wrapping
// ErrUnknownSchema or ErrMalformed.
func (a *Assignment) Validate() error { return a.validate(true) }

// validate checks the rules; the verifier passes withManifests false because
// it fills in the manifest bytes only when it parses each envelope.
func (a *Assignment) validate(withManifests bool) error {
	if err := checkHeader(a.Schema, a.Type, KindAssignment); err != nil {
		return err
	}
	if err := ValidateDeviceID(a.Device); err != nil {
		return err
	}
	if a.Sequence < 1 {
		return malformed("sequence must be 1 or more")
	}
	if a.Issued.IsZero() || a.Expires.IsZero() {
		return malformed("assignment needs issued and expires times")
	}
	if !a.Expires.After(a.Issued) {
		return malformed("assignment expires before it was issued")
	}
	for i, m := range a.Models {
		if err := m.validate(withManifests); err != nil {
			return fmt.Errorf("models[%d]: %w", i, err)
		}
	}
	return nil
}

func (m *ModelAssignment) validate(withManifest bool) error {
	if withManifest && (len(m.Manifest) == 0 || string(m.Manifest) == "null") {
		return malformed("entry has no manifest")
	}
	switch m.Mode {
	case ModeActive:
		if m.ShadowSamplePPM != 0 {
			return malformed("shadow_sample_ppm is only for shadow entries")
		}
	case ModeShadow:
		if len(m.Bindings) > 0 {
			return malformed("a shadow entry cannot have bindings: it does not serve")
		}
	default:
		return malformed(fmt.Sprintf("mode %q: want %q or %q", m.Mode, ModeActive, ModeShadow))
	}
	if m.ShadowSamplePPM > PPM || m.MaxErrorRatePPM > PPM {
		return malformed("rates are parts per million and cannot exceed 1000000")
	}
	for i, b := range m.Bindings {
		if err := validateTopicFilter(b.Input); err != nil {
			return fmt.Errorf("bindings[%d].input: %w", i, err)
		}
		if b.Output != "" {
			if err := validateTopicTemplate(b.Output); err != nil {
				return fmt.Errorf("bindings[%d].output: %w", i, err)
			}
		}
	}
	return nil
}

// ShadowSampleRate returns the shadow sample share between 0 and 1.
func (m *ModelAssignment) ShadowSampleRate() float64 {
	if m.ShadowSamplePPM == 0 {
		return 1
	}
	return float64(m.ShadowSamplePPM) / PPM
}

// MaxErrorRate returns the rollback error rate between 0 and 1; 0 means no limit.
func (m *ModelAssignment) MaxErrorRate() float64 { return float64(m.MaxErrorRatePPM) / PPM }

// validateTopicFilter applies MQTT 3.1.1 §4.7: "+" fills a whole level, "#"
// only the last whole level; no NUL; at most 65535 bytes.
func validateTopicFilter(f string) error {
	if f == "" || len(f) > 65535 || strings.ContainsRune(f, 0) {
		return malformed(fmt.Sprintf("topic filter %q is empty, too long or holds NUL", f))
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) != 1 {
			return malformed(fmt.Sprintf("topic filter %q: wildcards must fill a whole level", f))
		}
		if l == "#" && i != len(levels)-1 {
			return malformed(fmt.Sprintf("topic filter %q: # must be the last level", f))
		}
	}
	return nil
}

// validateTopicTemplate checks an output topic: no wildcards, no NUL, and
// {N} placeholders with N a level number from 1 to 99.
func validateTopicTemplate(t string) error {
	if len(t) > 65535 || strings.ContainsAny(t, "+#\x00") {
		return malformed(fmt.Sprintf("output topic %q: wildcards and NUL are not allowed", t))
	}
	rest := t
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		if strings.IndexByte(rest[:i], '}') >= 0 {
			return malformed(fmt.Sprintf("output topic %q: stray }", t))
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return malformed(fmt.Sprintf("output topic %q: unclosed {", t))
		}
		n := rest[i+1 : i+j]
		if !isNumeric(n) || len(n) > 2 || n[0] == '0' {
			return malformed(fmt.Sprintf("output topic %q: placeholder {%s} must be {1}..{99}", t, n))
		}
		rest = rest[i+j+1:]
	}
	if strings.IndexByte(rest, '}') >= 0 {
		return malformed(fmt.Sprintf("output topic %q: stray }", t))
	}
	return nil
}
