package manifest

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
)

// Semver is a parsed semantic version (https://semver.org, 2.0.0), without
// a leading "v": MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD].
type Semver struct {
	// Major, Minor and Patch are the three release numbers.
	Major, Minor, Patch uint64
	// Pre holds the dot-separated pre-release identifiers; empty for a release.
	Pre []string
	// Build is the build metadata after "+", ignored by Compare.
	Build string
}

// ParseSemver parses s. It returns an error wrapping ErrMalformed when s is
// not a valid semantic version (leading zeros, empty identifiers, a "v"
// prefix and so on).
func ParseSemver(s string) (Semver, error) {
	var v Semver
	bad := func(why string) (Semver, error) {
		return Semver{}, malformed(fmt.Sprintf("version %q is not semver (MAJOR.MINOR.PATCH): %s", s, why))
	}
	if len(s) > 256 {
		return bad("longer than 256 bytes")
	}
	rest := s
	if i := strings.IndexByte(rest, '+'); i >= 0 {
		v.Build = rest[i+1:]
		rest = rest[:i]
		if err := checkIdents(v.Build, false); err != "" {
			return bad("build metadata: " + err)
		}
	}
	if i := strings.IndexByte(rest, '-'); i >= 0 {
		pre := rest[i+1:]
		rest = rest[:i]
		if err := checkIdents(pre, true); err != "" {
			return bad("pre-release: " + err)
		}
		v.Pre = strings.Split(pre, ".")
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return bad("want three numbers separated by dots")
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		if !isNumeric(p) {
			return bad(fmt.Sprintf("%q is not a number", p))
		}
		if len(p) > 1 && p[0] == '0' {
			return bad(fmt.Sprintf("%q has a leading zero", p))
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return bad(fmt.Sprintf("%q is out of range", p))
		}
		*nums[i] = n
	}
	return v, nil
}

// checkIdents validates dot-separated identifiers ([0-9A-Za-z-]+); numeric
// pre-release identifiers must not have leading zeros. It returns a reason or "".
func checkIdents(s string, pre bool) string {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return "empty identifier"
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return fmt.Sprintf("identifier %q has a character outside [0-9A-Za-z-]", id)
			}
		}
		if pre && isNumeric(id) && len(id) > 1 && id[0] == '0' {
			return fmt.Sprintf("numeric identifier %q has a leading zero", id)
		}
	}
	return ""
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats v.
func (v Semver) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if len(v.Pre) > 0 {
		s += "-" + strings.Join(v.Pre, ".")
	}
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}

// Compare returns -1, 0 or +1 as v is lower than, equal to or higher than w
// in semver precedence: a pre-release is lower than its release, build
// metadata is ignored.
func (v Semver) Compare(w Semver) int {
	if c := cmp.Compare(v.Major, w.Major); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Minor, w.Minor); c != 0 {
		return c
	}
	if c := cmp.Compare(v.Patch, w.Patch); c != 0 {
		return c
	}
	switch {
	case len(v.Pre) == 0 && len(w.Pre) == 0:
		return 0
	case len(v.Pre) == 0:
		return 1
	case len(w.Pre) == 0:
		return -1
	}
	for i := 0; i < len(v.Pre) && i < len(w.Pre); i++ {
		if c := compareIdent(v.Pre[i], w.Pre[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(v.Pre), len(w.Pre))
}

func compareIdent(a, b string) int {
	an, bn := isNumeric(a), isNumeric(b)
	switch {
	case an && bn:
		// No leading zeros, so the longer number is the larger one.
		if c := cmp.Compare(len(a), len(b)); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

// CompareSemver parses and compares two versions (see Semver.Compare). It
// returns an error wrapping ErrMalformed when either is not semver.
func CompareSemver(a, b string) (int, error) {
	va, err := ParseSemver(a)
	if err != nil {
		return 0, err
	}
	vb, err := ParseSemver(b)
	if err != nil {
		return 0, err
	}
	return va.Compare(vb), nil
}
