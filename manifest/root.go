package manifest

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Role names.
const (
	RoleRoot     = "root"
	RoleRelease  = "release"
	RoleDirector = "director"
)

// Roles lists the role names in a fixed order.
var Roles = []string{RoleRoot, RoleRelease, RoleDirector}

// Root is the trust root (role root): the public keys and thresholds of every
// role. Its JSON form is the "signed" member of root.json.
type Root struct {
	// Schema is SchemaV1; Sign fills it in.
	Schema string `json:"schema"`
	// Type is KindRoot; Sign fills it in.
	Type string `json:"type"`
	// Version starts at 1 and goes up by exactly one per rotation.
	Version uint64 `json:"version"`
	// Expires is when agents stop trusting this root (RFC 3339).
	Expires time.Time `json:"expires"`
	// Keys maps key ID to public key. Every key ID must equal PublicKey.ID.
	Keys map[string]PublicKey `json:"keys"`
	// Roles holds the key IDs and threshold of each role.
	Roles RoleKeys `json:"roles"`
}

// RoleKeys is the "roles" member of a Root.
type RoleKeys struct {
	// Root signs root.json.
	Root Role `json:"root"`
	// Release signs model manifests.
	Release Role `json:"release"`
	// Director signs assignments.
	Director Role `json:"director"`
}

// Role is one role's keys and threshold.
type Role struct {
	// KeyIDs lists the role's keys.
	KeyIDs []string `json:"keyids"`
	// Threshold is how many distinct keys of KeyIDs must sign, at least 1.
	Threshold int `json:"threshold"`
}

// Kind implements Document.
func (r *Root) Kind() string { return KindRoot }

func (r *Root) setHeader() { r.Schema, r.Type = SchemaV1, KindRoot }

// Role returns the named role, or false for an unknown name.
func (r *Root) Role(name string) (Role, bool) {
	switch name {
	case RoleRoot:
		return r.Roles.Root, true
	case RoleRelease:
		return r.Roles.Release, true
	case RoleDirector:
		return r.Roles.Director, true
	}
	return Role{}, false
}

// SetRole replaces the named role; it returns an error for an unknown name.
func (r *Root) SetRole(name string, role Role) error {
	switch name {
	case RoleRoot:
		r.Roles.Root = role
	case RoleRelease:
		r.Roles.Release = role
	case RoleDirector:
		r.Roles.Director = role
	default:
		return fmt.Errorf("unknown role %q (want root, release or director)", name)
	}
	return nil
}

// Validate checks the format rules of a root: schema and type, version ≥ 1,
// an expiry, key IDs that match their keys, and for each role at least one
// distinct known key and a threshold between 1 and the number of keys. It
// returns an error wrapping ErrUnknownSchema or ErrMalformed.
func (r *Root) Validate() error {
	if err := checkHeader(r.Schema, r.Type, KindRoot); err != nil {
		return err
	}
	if r.Version < 1 {
		return malformed("root version must be 1 or more")
	}
	if r.Expires.IsZero() {
		return malformed("root has no expires time")
	}
	if len(r.Keys) == 0 {
		return malformed("root lists no keys")
	}
	for id, k := range r.Keys {
		got, err := k.ID()
		if err != nil {
			return fmt.Errorf("key %s: %w", short(id), err)
		}
		if got != id {
			return malformed(fmt.Sprintf("key listed as %s has ID %s: key IDs must be the sha256 of the key", short(id), short(got)))
		}
	}
	for _, name := range Roles {
		role, _ := r.Role(name)
		if len(role.KeyIDs) == 0 {
			return malformed(fmt.Sprintf("role %s has no keys", name))
		}
		seen := map[string]bool{}
		for _, id := range role.KeyIDs {
			if seen[id] {
				return malformed(fmt.Sprintf("role %s lists key %s twice", name, short(id)))
			}
			seen[id] = true
			if _, ok := r.Keys[id]; !ok {
				return malformed(fmt.Sprintf("role %s lists key %s that is not in keys", name, short(id)))
			}
		}
		if role.Threshold < 1 || role.Threshold > len(role.KeyIDs) {
			return malformed(fmt.Sprintf("role %s threshold %d must be between 1 and its %d keys", name, role.Threshold, len(role.KeyIDs)))
		}
	}
	return nil
}

// Clone returns a deep copy of r.
func (r *Root) Clone() *Root {
	c := *r
	c.Keys = maps.Clone(r.Keys)
	c.Roles.Root.KeyIDs = slices.Clone(r.Roles.Root.KeyIDs)
	c.Roles.Release.KeyIDs = slices.Clone(r.Roles.Release.KeyIDs)
	c.Roles.Director.KeyIDs = slices.Clone(r.Roles.Director.KeyIDs)
	return &c
}

// Next returns a copy of r with Version+1 and the given expiry: the starting
// point of a rotation. Replace role keys with SetRole (and add the keys to
// Keys; PruneKeys drops those no role uses), then Sign the result with a
// threshold of the old AND the new root keys.
func (r *Root) Next(expires time.Time) *Root {
	c := r.Clone()
	c.Version++
	c.Expires = expires
	return c
}

// AddKey adds a public key and returns its ID.
func (r *Root) AddKey(k PublicKey) (string, error) {
	id, err := k.ID()
	if err != nil {
		return "", err
	}
	if r.Keys == nil {
		r.Keys = map[string]PublicKey{}
	}
	r.Keys[id] = k
	return id, nil
}

// PruneKeys removes keys no role lists.
func (r *Root) PruneKeys() {
	used := map[string]bool{}
	for _, name := range Roles {
		role, _ := r.Role(name)
		for _, id := range role.KeyIDs {
			used[id] = true
		}
	}
	maps.DeleteFunc(r.Keys, func(id string, _ PublicKey) bool { return !used[id] })
}

// ParseRoot parses a signed root.json and checks that a threshold of its own
// root keys signed it. It is for tools (the CLI, the hub) that hold a root
// they already trust by other means; agents use a Verifier. Errors are
// *VerifyError values wrapping the sentinel errors.
func ParseRoot(raw []byte, maxDocumentBytes int64) (*Root, error) {
	tr, err := loadTrustedRoot(raw, maxDocumentBytes)
	if err != nil {
		return nil, err
	}
	return tr.root.Clone(), nil
}

func checkHeader(schema, typ, want string) error {
	if schema != SchemaV1 {
		return &formatError{err: ErrUnknownSchema, msg: fmt.Sprintf("schema %q is not %q: this agent is too old or the document is not a modelfleet document", schema, SchemaV1)}
	}
	if typ != want {
		return malformed(fmt.Sprintf("type is %q, want %q", typ, want))
	}
	return nil
}
