package store

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLabelBytes bounds label keys and values.
const MaxLabelBytes = 256

// Selector picks devices by labels: every key must be present on the device
// with exactly the given value. The empty selector matches every device.
// Its text form is "k=v,k2=v2" (see ParseSelector).
type Selector map[string]string

// ParseSelector parses "k=v,k2=v2". Spaces around keys and values are
// ignored; the empty string (or only spaces) is the empty selector. It
// returns an error wrapping ErrInvalid naming the offending pair when a pair
// has no "=", an empty key or value, a key given twice, or a key or value
// that is not a valid label (see ValidateLabel).
func ParseSelector(s string) (Selector, error) {
	sel := Selector{}
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for i, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case strings.TrimSpace(pair) == "":
			return nil, fmt.Errorf("selector %q: pair %d is empty (stray comma?): %w", s, i+1, ErrInvalid)
		case !ok:
			return nil, fmt.Errorf("selector %q: pair %q has no '=' (want key=value): %w", s, pair, ErrInvalid)
		}
		if err := ValidateLabel(k, v); err != nil {
			return nil, fmt.Errorf("selector %q: %w", s, err)
		}
		if prev, dup := sel[k]; dup {
			return nil, fmt.Errorf("selector %q: key %q given twice (%q and %q); a device has one value per key: %w", s, k, prev, v, ErrInvalid)
		}
		sel[k] = v
	}
	return sel, nil
}

// ValidateLabel checks a label key and value, as set by operators and used
// in selectors: both 1–MaxLabelBytes bytes of valid UTF-8, printable
// characters only, without "=" or "," and without leading or trailing
// spaces. It returns an error wrapping ErrInvalid.
func ValidateLabel(key, value string) error {
	if err := validateLabelPart("key", key); err != nil {
		return err
	}
	if err := validateLabelPart(fmt.Sprintf("value of %q", key), value); err != nil {
		return err
	}
	return nil
}

func validateLabelPart(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("label %s is empty: %w", what, ErrInvalid)
	case len(s) > MaxLabelBytes:
		return fmt.Errorf("label %s is longer than %d bytes: %w", what, MaxLabelBytes, ErrInvalid)
	case strings.ContainsAny(s, "=,"):
		return fmt.Errorf("label %s %q contains '=' or ',': %w", what, s, ErrInvalid)
	case !utf8.ValidString(s):
		return fmt.Errorf("label %s %q contains a control or invalid character: %w", what, s, ErrInvalid)
	case strings.TrimSpace(s) != s:
		return fmt.Errorf("label %s %q has leading or trailing spaces: %w", what, s, ErrInvalid)
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("label %s %q contains a control or invalid character: %w", what, s, ErrInvalid)
		}
	}
	return nil
}

// Validate checks every pair of the selector (see ValidateLabel).
func (s Selector) Validate() error {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		if err := ValidateLabel(k, s[k]); err != nil {
			return fmt.Errorf("selector: %w", err)
		}
	}
	return nil
}

// Matches reports whether labels hold every pair of the selector.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// String returns the canonical text form: pairs sorted by key.
func (s Selector) String() string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(s)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(s[k])
	}
	return b.String()
}
