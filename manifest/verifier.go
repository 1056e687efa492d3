package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults of Config.
const (
	// DefaultMaxDocumentBytes caps a signed document (1 MiB); an assignment
	// with a dozen embedded manifests is a few tens of KiB.
	DefaultMaxDocumentBytes int64 = 1 << 20
	// DefaultMaxArtifactBytes caps a model file (8 GiB).
	DefaultMaxArtifactBytes int64 = 8 << 30
	// DefaultClockSkew is how far past its expiry a document is still
	// accepted (5 minutes), so that a device clock a little ahead of the
	// hub's does not freeze the device.
	DefaultClockSkew = 5 * time.Minute
)

// Config configures a Verifier.
type Config struct {
	// DeviceID is the device's ID; assignments for other devices are
	// refused. Required by VerifyAssignment.
	DeviceID string
	// Variants lists the artifact variants this device can run, best first,
	// e.g. ["cuda", "cpu"]. Required by VerifyAssignment.
	Variants []string
	// MaxArtifactBytes caps the declared size of the chosen artifact;
	// 0 means DefaultMaxArtifactBytes.
	MaxArtifactBytes int64
	// MaxDocumentBytes caps every document before it is parsed; 0 means
	// DefaultMaxDocumentBytes.
	MaxDocumentBytes int64
	// ClockSkew is how long after its expiry a document is still accepted.
	// Zero means no tolerance; DefaultConfig sets DefaultClockSkew.
	ClockSkew time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with the default limits, a clock skew of
// DefaultClockSkew, time.Now and the variant list ["cpu"]; DeviceID is empty.
func DefaultConfig() Config {
	return Config{
		Variants:         []string{"cpu"},
		MaxArtifactBytes: DefaultMaxArtifactBytes,
		MaxDocumentBytes: DefaultMaxDocumentBytes,
		ClockSkew:        DefaultClockSkew,
		Now:              time.Now,
	}
}

// State is the part of the Verifier's memory the agent persists between
// runs (next to the trusted root, see Verifier.RootJSON) and hands back
// with Verifier.Restore.
type State struct {
	// Sequence is the sequence of the last accepted assignment.
	Sequence uint64 `json:"sequence"`
	// Models maps model name to the version of its last accepted active
	// entry. Names stay after a model leaves the assignment, so a later
	// re-assignment of an older version needs allow_downgrade.
	Models map[string]string `json:"models,omitempty"`
}

// Verifier holds an agent's trust: the trusted root and the state of the
// last accepted assignment. It is a state machine in the style of TUF's
// trusted metadata: UpdateRoot moves the root forward; VerifyAssignment
// checks an assignment without changing anything; Accept records it once
// the agent has taken it as its desired state.
//
// A Verifier is safe for concurrent use; its methods serialise on a mutex.
// Create it with NewVerifier; the zero value is not usable.
type Verifier struct {
	cfg Config

	mu    sync.Mutex // guards all following fields
	root  *trustedRoot
	state State
	gen   uint64 // bumped on every change of root or state
	// manifests remembers manifest envelopes whose release signatures
	// verified under the current root, with the decoded, validated
	// manifest: assignments are refreshed often and repeat the same
	// manifests. Dropped (set to nil) on root change.
	manifests *manifestCache
}

// NewVerifier returns a Verifier trusting rootJSON, a signed root.json
// that a threshold of its own root keys must have signed. The initial root
// is trusted as given (it comes from enrolment), so it may be expired: it
// can then still be rotated away with UpdateRoot, but nothing else verifies
// until it is. Errors wrap the sentinel errors; a bad Config is reported
// with a plain error.
func NewVerifier(rootJSON []byte, cfg Config) (*Verifier, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxDocumentBytes <= 0 {
		cfg.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if cfg.MaxArtifactBytes <= 0 {
		cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if cfg.ClockSkew < 0 {
		return nil, fmt.Errorf("clock skew %v is negative", cfg.ClockSkew)
	}
	if cfg.DeviceID != "" {
		if err := ValidateDeviceID(cfg.DeviceID); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	for _, v := range cfg.Variants {
		if !validIdent(v, 32, "_-", false) {
			return nil, fmt.Errorf("config: variant %q: want 1-32 of [a-z0-9_-]", v)
		}
	}
	cfg.Variants = slices.Clone(cfg.Variants)
	tr, err := loadTrustedRoot(rootJSON, cfg.MaxDocumentBytes)
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, root: tr}, nil
}

// Root returns a copy of the trusted root.
func (v *Verifier) Root() *Root {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.root.root.Clone()
}

// RootJSON returns the canonical bytes of the trusted root envelope, for
// the agent to persist.
func (v *Verifier) RootJSON() []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.root.raw)
}

// State returns a copy of the last accepted state.
func (v *Verifier) State() State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return State{Sequence: v.state.Sequence, Models: maps.Clone(v.state.Models)}
}

// Restore replaces the state with one the agent persisted. It returns an
// error wrapping ErrMalformed when a model name or version is invalid.
func (v *Verifier) Restore(s State) error {
	for name, ver := range s.Models {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("restore state: %w", err)
		}
		if _, err := ParseSemver(ver); err != nil {
			return fmt.Errorf("restore state: model %s: %w", name, err)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state = State{Sequence: s.Sequence, Models: maps.Clone(s.Models)}
	v.gen++
	return nil
}

// UpdateRoot moves trust to a new root. The new root must be signed by a
// threshold of the trusted root's root keys and by a threshold of its own
// root keys, have version = trusted + 1 and not be expired. An expired
// trusted root can be rotated away. Receiving the trusted root itself again
// (a retained message re-delivered) is not an error: it returns the trusted
// root unchanged. Rotations apply one version at a time; a chain 1→2→3 is
// two calls.
//
// Errors are *VerifyError values wrapping ErrDocTooLarge, ErrMalformed,
// ErrUnknownSchema, ErrWrongRole, ErrBadSignature, ErrUnknownKey,
// ErrThreshold, ErrRollback, ErrVersionGap or ErrExpired.
func (v *Verifier) UpdateRoot(raw []byte) (*Root, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := newChecklist(KindRoot, "")
	old := v.root
	if err := c.size(raw, v.cfg.MaxDocumentBytes); err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(raw)
	if err != nil {
		return nil, c.failErr("parse", err)
	}
	c.pass("parse")
	if bytes.Equal(env.raw, old.raw) {
		return old.root.Clone(), nil
	}
	if err := c.header(env, KindRoot); err != nil {
		return nil, err
	}
	if err := old.checkSignatures(c, "signatures-old-root", RoleRoot, env); err != nil {
		return nil, err
	}
	root, err := c.root(env)
	if err != nil {
		return nil, err
	}
	switch {
	case root.Version <= old.root.Version:
		return nil, c.fail("version", ErrRollback, fmt.Sprintf("version %d is not above the trusted version %d: an old root was replayed", root.Version, old.root.Version))
	case root.Version != old.root.Version+1:
		return nil, c.fail("version", ErrVersionGap, fmt.Sprintf("version %d skips ahead of the trusted version %d: apply version %d first", root.Version, old.root.Version, old.root.Version+1))
	}
	c.pass("version")
	next := newTrustedRoot(root)
	if err := next.checkSignatures(c, "signatures-new-root", RoleRoot, env); err != nil {
		return nil, err
	}
	if now := v.cfg.Now(); now.After(root.Expires.Add(v.cfg.ClockSkew)) {
		return nil, c.fail("expiry", ErrExpired, fmt.Sprintf("the new root expired at %s (now %s)", root.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	}
	c.pass("expiry")
	next.raw = env.raw
	v.root = next
	v.manifests = nil
	v.gen++
	return root.Clone(), nil
}

// VerifiedManifest is a model manifest whose release signatures and format
// checked out.
type VerifiedManifest struct {
	// Manifest is the decoded manifest.
	Manifest *ModelManifest
	// Digest is the hex sha256 of the canonical signed manifest bytes; it
	// identifies the release independently of its signatures.
	Digest string
	// Artifact is the artifact for the configured variants, or nil when the
	// Verifier has no variants configured.
	Artifact *Artifact
	// Checks lists the checks that passed, in order.
	Checks []string
}

// VerifyManifest checks a standalone signed model manifest: size, format,
// the trusted root's expiry, a threshold of release signatures, the format
// rules, and the artifact sizes (the chosen artifact when variants are
// configured, all artifacts otherwise). It changes nothing.
//
// Errors are *VerifyError values wrapping ErrDocTooLarge, ErrMalformed,
// ErrUnknownSchema, ErrWrongRole, ErrExpired, ErrBadSignature,
// ErrUnknownKey, ErrThreshold, ErrNoArtifact or ErrTooLarge.
func (v *Verifier) VerifyManifest(raw []byte) (*VerifiedManifest, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := newChecklist(KindModel, "")
	if err := c.size(raw, v.cfg.MaxDocumentBytes); err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(raw)
	if err != nil {
		return nil, c.failErr("parse", err)
	}
	c.pass("parse")
	if err := c.header(env, KindModel); err != nil {
		return nil, err
	}
	if err := v.checkRootExpiry(c); err != nil {
		return nil, err
	}
	m, sum, art, err := v.verifyModel(c, env, nil)
	if err != nil {
		return nil, err
	}
	vm := &VerifiedManifest{Manifest: m, Digest: sum, Checks: *c.passed}
	if len(v.cfg.Variants) > 0 {
		vm.Artifact = &art
	}
	return vm, nil
}

// VerifiedAssignment is an assignment that passed every check, ready for
// the agent to act on and then Accept.
type VerifiedAssignment struct {
	// Assignment is the decoded assignment.
	Assignment *Assignment
	// Models holds one entry per assignment entry, in order.
	Models []VerifiedModel
	// Checks lists the checks that passed, in order.
	Checks []string

	verifier *Verifier
	gen      uint64
}

// VerifiedModel is one verified entry of an assignment.
type VerifiedModel struct {
	// Entry is the assignment entry; Entry.Manifest holds the canonical
	// manifest envelope.
	Entry ModelAssignment
	// Manifest is the decoded, release-verified model manifest.
	Manifest *ModelManifest
	// Digest is the hex sha256 of the canonical signed manifest bytes.
	Digest string
	// Artifact is the artifact this device runs: the first configured
	// variant the manifest offers.
	Artifact Artifact
	// Downgrade is true when the version is below the last accepted one and
	// the entry allowed it (an explicit rollback).
	Downgrade bool
}

// VerifyAssignment checks a signed assignment, in this order: document
// size, canonical JSON, schema and type, the trusted root's expiry, a
// threshold of director signatures, format, device ID, sequence above the
// last accepted, expiry (with the clock skew tolerance); then for each model
// entry: the embedded manifest's schema, a threshold of release signatures,
// format, an artifact for this device's variants within the size cap, and a
// version not lower than the last accepted one unless allow_downgrade; and
// last that each model name has at most one active and one shadow entry, a
// shadow entry only beside an active one.
//
// It does not change the Verifier's state: call Accept once the agent has
// taken the assignment as its desired state. Errors are *VerifyError values
// wrapping ErrDocTooLarge, ErrMalformed, ErrUnknownSchema, ErrWrongRole,
// ErrExpired, ErrBadSignature, ErrUnknownKey, ErrThreshold, ErrWrongDevice,
// ErrRollback, ErrNoArtifact, ErrTooLarge or ErrVersionNotNewer; a Verifier
// without DeviceID or Variants returns a plain error.
func (v *Verifier) VerifyAssignment(raw []byte) (*VerifiedAssignment, error) {
	if v.cfg.DeviceID == "" || len(v.cfg.Variants) == 0 {
		return nil, errors.New("verify assignment: the verifier has no device ID or variants configured")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	c := newChecklist(KindAssignment, "")
	if err := c.size(raw, v.cfg.MaxDocumentBytes); err != nil {
		return nil, err
	}
	// Embedded manifest envelopes verified before are grafted in, not
	// parsed again, when their bytes are exactly the remembered ones.
	var known subtrees
	if v.manifests != nil {
		known = v.manifests
	}
	tree, err := parseJSONWith(raw, known)
	if err != nil {
		return nil, c.failErr("parse", err)
	}
	env, err := envelopeFromNode(tree)
	if err != nil {
		return nil, c.failErr("parse", err)
	}
	c.pass("parse")
	if err := c.header(env, KindAssignment); err != nil {
		return nil, err
	}
	if err := v.checkRootExpiry(c); err != nil {
		return nil, err
	}
	if err := v.root.checkSignatures(c, "signatures", RoleDirector, env); err != nil {
		return nil, err
	}
	a, manifests, err := decodeAssignment(env.signed)
	if err != nil {
		return nil, c.failErr("structure", err)
	}
	if err := a.validate(false); err != nil {
		return nil, c.failErr("structure", err)
	}
	c.name = a.Ref()
	// Room for the remaining checks: the list is the result's Checks.
	*c.passed = slices.Grow(*c.passed, 4+8*len(a.Models))
	c.pass("structure")
	if a.Device != v.cfg.DeviceID {
		return nil, c.fail("device", ErrWrongDevice, fmt.Sprintf("addressed to device %q, this is %q", a.Device, v.cfg.DeviceID))
	}
	c.pass("device")
	if a.Sequence <= v.state.Sequence {
		return nil, c.fail("sequence", ErrRollback, fmt.Sprintf("sequence %d is not above the last accepted %d: a replayed or rolled-back assignment", a.Sequence, v.state.Sequence))
	}
	c.pass("sequence")
	if now := v.cfg.Now(); now.After(a.Expires.Add(v.cfg.ClockSkew)) {
		return nil, c.fail("expiry", ErrExpired, fmt.Sprintf("expired at %s (now %s, tolerance %s): the hub has not refreshed it, or the device clock is wrong", a.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.cfg.ClockSkew))
	}
	c.pass("expiry")

	va := &VerifiedAssignment{Assignment: a, verifier: v, gen: v.gen}
	for i := range a.Models {
		entry := &a.Models[i]
		index := strconv.Itoa(i)
		mc := c.sub(KindModel, "in "+c.name+" models["+index+"]", "models["+index+"].")
		// A grafted envelope is a remembered one: parsed, checked and
		// verified before, from exactly these bytes.
		known := v.manifests.grafted(manifests[i])
		var menv *Envelope
		if known != nil {
			menv = known.env
			entry.Manifest = slices.Clone(menv.raw)
		} else {
			if menv, err = envelopeFromNode(manifests[i]); err != nil {
				return nil, mc.failErr("parse", err)
			}
			entry.Manifest = menv.raw
		}
		mc.pass("parse")
		if err := mc.header(menv, KindModel); err != nil {
			return nil, err
		}
		m, sum, art, err := v.verifyModel(mc, menv, known)
		if err != nil {
			return nil, err
		}
		vm := VerifiedModel{Entry: *entry, Manifest: m, Digest: sum, Artifact: art}
		if last, ok := v.state.Models[m.Name]; ok {
			lv, err := ParseSemver(last)
			if err != nil {
				return nil, mc.failErr("version", err)
			}
			mv, _ := ParseSemver(m.Version) // validated by verifyModel
			if mv.Compare(lv) < 0 {
				if !entry.AllowDowngrade {
					return nil, mc.fail("version", ErrVersionNotNewer, fmt.Sprintf("version %s is lower than the accepted %s and the entry does not set allow_downgrade", m.Version, last))
				}
				vm.Downgrade = true
			}
		}
		mc.pass("version")
		va.Models = append(va.Models, vm)
	}
	if err := checkEntries(va.Models); err != nil {
		return nil, c.failErr("entries", err)
	}
	c.pass("entries")
	va.Checks = *c.passed
	return va, nil
}

// Accept records a verified assignment as accepted: its sequence becomes the
// last accepted one and the versions of its active models the last accepted
// versions. Call it once the agent has taken the assignment as its desired
// state (even if installing a model then fails, so the same bytes cannot be
// replayed), then persist State.
//
// It returns a *VerifyError wrapping ErrStale when the Verifier changed
// since va was verified (another Accept, Restore or UpdateRoot), or when va
// came from another Verifier: verify the same bytes again and Accept that.
func (v *Verifier) Accept(va *VerifiedAssignment) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if va == nil || va.Assignment == nil {
		return errors.New("accept: nil assignment")
	}
	if va.verifier != v || va.gen != v.gen {
		c := newChecklist(KindAssignment, va.Assignment.Ref())
		return c.fail("accept", ErrStale, "the trust state changed since this assignment was verified; verify it again")
	}
	models := maps.Clone(v.state.Models)
	if models == nil {
		models = map[string]string{}
	}
	for _, m := range va.Models {
		if m.Entry.Mode == ModeActive {
			models[m.Manifest.Name] = m.Manifest.Version
		}
	}
	v.state = State{Sequence: va.Assignment.Sequence, Models: models}
	v.gen++
	return nil
}

// verifyModel checks a manifest envelope whose header was checked against
// the release role and the Verifier's artifact rules, and returns the
// manifest, the hex sha256 of its signed bytes and the artifact. known is
// env's cache entry when the caller has it. v.mu is held.
func (v *Verifier) verifyModel(c *checklist, env *Envelope, known *cachedManifest) (*ModelManifest, string, Artifact, error) {
	var key [32]byte
	if known == nil {
		key = sha256.Sum256(env.raw)
		known = v.manifests.lookup(key)
	}
	var m *ModelManifest
	var sum string
	if known != nil {
		m, sum = known.m.Clone(), known.digest
		c.pass("signatures")
	} else {
		if err := v.root.checkSignatures(c, "signatures", RoleRelease, env); err != nil {
			return nil, "", Artifact{}, err
		}
		var err error
		if m, err = decodeModel(env.signed, true); err != nil {
			return nil, "", Artifact{}, c.failErr("structure", err)
		}
		if err := m.Validate(); err != nil {
			return nil, "", Artifact{}, c.failErr("structure", err)
		}
		sum = digest(env.Signed)
		v.manifests = v.manifests.add(key, env, m.Clone(), sum)
	}
	c.name = strings.TrimSpace(m.Ref() + " " + c.name)
	c.pass("structure")
	if len(v.cfg.Variants) == 0 {
		for _, a := range m.Artifacts {
			if a.Size > v.cfg.MaxArtifactBytes {
				return nil, "", Artifact{}, c.fail("artifact-size", ErrTooLarge, fmt.Sprintf("%s artifact declares %d bytes, limit %d", a.Variant, a.Size, v.cfg.MaxArtifactBytes))
			}
		}
		c.pass("artifact-size")
		return m, sum, Artifact{}, nil
	}
	art, ok := m.Artifact(v.cfg.Variants)
	if !ok {
		have := make([]string, len(m.Artifacts))
		for i, a := range m.Artifacts {
			have[i] = a.Variant
		}
		return nil, "", Artifact{}, c.fail("artifact", ErrNoArtifact, fmt.Sprintf("manifest offers %v, this device runs %v", have, v.cfg.Variants))
	}
	c.pass("artifact")
	if art.Size > v.cfg.MaxArtifactBytes {
		return nil, "", Artifact{}, c.fail("artifact-size", ErrTooLarge, fmt.Sprintf("%s artifact declares %d bytes, limit %d", art.Variant, art.Size, v.cfg.MaxArtifactBytes))
	}
	c.pass("artifact-size")
	return m, sum, art, nil
}

func (v *Verifier) checkRootExpiry(c *checklist) error {
	if now := v.cfg.Now(); now.After(v.root.root.Expires.Add(v.cfg.ClockSkew)) {
		return c.fail("root-expiry", ErrExpired, fmt.Sprintf("the trusted root (version %d) expired at %s: publish a rotated root (fleethub keys rotate)", v.root.root.Version, v.root.root.Expires.UTC().Format(time.RFC3339)))
	}
	c.pass("root-expiry")
	return nil
}

// checkEntries enforces at most one active and one shadow entry per model
// name, and no shadow without an active entry.
func checkEntries(models []VerifiedModel) error {
	type modes struct{ active, shadow int }
	byName := map[string]*modes{}
	for _, m := range models {
		n := byName[m.Manifest.Name]
		if n == nil {
			n = &modes{}
			byName[m.Manifest.Name] = n
		}
		if m.Entry.Mode == ModeActive {
			n.active++
		} else {
			n.shadow++
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		n := byName[name]
		if n.active > 1 || n.shadow > 1 {
			return malformed(fmt.Sprintf("model %s has more than one active or shadow entry", name))
		}
		if n.shadow == 1 && n.active == 0 {
			return malformed(fmt.Sprintf("model %s has a shadow entry but no active entry to shadow", name))
		}
	}
	return nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// trustedRoot is a verified root with its keys decoded.
type trustedRoot struct {
	root  *Root
	raw   []byte // canonical envelope
	keys  map[string]ed25519.PublicKey
	roles map[string]roleInfo
}

type roleInfo struct {
	ids       map[string]bool
	threshold int
}

// newTrustedRoot indexes a validated root.
func newTrustedRoot(r *Root) *trustedRoot {
	tr := &trustedRoot{root: r, keys: map[string]ed25519.PublicKey{}, roles: map[string]roleInfo{}}
	for id, k := range r.Keys {
		if pub, err := k.Ed25519(); err == nil {
			tr.keys[id] = pub
		}
	}
	for _, name := range Roles {
		role, _ := r.Role(name)
		ri := roleInfo{ids: map[string]bool{}, threshold: role.Threshold}
		for _, id := range role.KeyIDs {
			ri.ids[id] = true
		}
		tr.roles[name] = ri
	}
	return tr
}

// loadTrustedRoot parses a self-signed root.
func loadTrustedRoot(raw []byte, maxBytes int64) (*trustedRoot, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDocumentBytes
	}
	c := newChecklist(KindRoot, "")
	if err := c.size(raw, maxBytes); err != nil {
		return nil, err
	}
	env, err := ParseEnvelope(raw)
	if err != nil {
		return nil, c.failErr("parse", err)
	}
	c.pass("parse")
	if err := c.header(env, KindRoot); err != nil {
		return nil, err
	}
	root, err := c.root(env)
	if err != nil {
		return nil, err
	}
	tr := newTrustedRoot(root)
	if err := tr.checkSignatures(c, "signatures", RoleRoot, env); err != nil {
		return nil, err
	}
	tr.raw = env.raw
	return tr, nil
}

// rolesOf names the roles that list keyID.
func (tr *trustedRoot) rolesOf(keyID string) string {
	var names []string
	for _, name := range Roles {
		if tr.roles[name].ids[keyID] {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "no role"
	}
	return strings.Join(names, "+")
}

// checkSignatures requires a threshold of distinct keys of role to have
// validly signed env. Signatures by other keys are ignored once the
// threshold is met; otherwise the most telling failure is reported: a bad
// signature by a role key; too few signatures when some role keys signed;
// else keys of another role, unknown keys, or no signature at all.
func (tr *trustedRoot) checkSignatures(c *checklist, check, role string, env *Envelope) error {
	ri := tr.roles[role]
	valid := map[string]bool{}
	var bad, other, unknown []string
	for _, s := range env.Signatures {
		if valid[s.KeyID] {
			continue
		}
		if !ri.ids[s.KeyID] {
			if _, known := tr.keys[s.KeyID]; known {
				other = append(other, s.KeyID)
			} else {
				unknown = append(unknown, s.KeyID)
			}
			continue
		}
		pub := tr.keys[s.KeyID]
		sig, err := base64.StdEncoding.Strict().DecodeString(s.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, env.Signed, sig) {
			bad = append(bad, s.KeyID)
			continue
		}
		valid[s.KeyID] = true
	}
	if len(valid) >= ri.threshold {
		c.pass(check)
		return nil
	}
	switch {
	case len(bad) > 0:
		return c.fail(check, ErrBadSignature, fmt.Sprintf("the signature by %s key %s does not verify: the document was changed after signing, or signed by another key", role, short(bad[0])))
	case len(valid) > 0:
		// Some role keys signed: other signatures are likely unrelated keys
		// (e.g. the new keys of a rotation); the problem is the count.
	case len(other) > 0:
		return c.fail(check, ErrWrongRole, fmt.Sprintf("signed by key %s of role %s, but a %s document needs the %s role", short(other[0]), tr.rolesOf(other[0]), env.Type, role))
	case len(unknown) > 0:
		return c.fail(check, ErrUnknownKey, fmt.Sprintf("signed by key %s, which the trusted root (version %d) does not list", short(unknown[0]), tr.root.Version))
	}
	return c.fail(check, ErrThreshold, fmt.Sprintf("%d distinct %s keys signed, %d needed", len(valid), role, ri.threshold))
}

// checklist records passed checks and builds VerifyErrors.
type checklist struct {
	kind, name, prefix string
	passed             *[]string
}

func newChecklist(kind, name string) *checklist {
	return &checklist{kind: kind, name: name, passed: new([]string)}
}

// sub returns a checklist for a nested document whose checks are recorded
// in the same list under prefix.
func (c *checklist) sub(kind, name, prefix string) *checklist {
	return &checklist{kind: kind, name: name, prefix: c.prefix + prefix, passed: c.passed}
}

func (c *checklist) pass(check string) { *c.passed = append(*c.passed, c.prefix+check) }

func (c *checklist) fail(check string, sentinel error, msg string) *VerifyError {
	return &VerifyError{
		Kind:   c.kind,
		Name:   c.name,
		Check:  c.prefix + check,
		Passed: slices.Clone(*c.passed),
		Err:    sentinel,
		Msg:    msg,
	}
}

// failErr wraps a format or parse error, keeping its sentinel.
func (c *checklist) failErr(check string, err error) *VerifyError {
	sentinel := ErrMalformed
	if errors.Is(err, ErrUnknownSchema) {
		sentinel = ErrUnknownSchema
	}
	msg := strings.Replace(err.Error(), sentinel.Error()+": ", "", 1)
	return c.fail(check, sentinel, msg)
}

// header checks schema and type; a known type other than want is a role
// confusion.
func (c *checklist) header(env *Envelope, want string) error {
	if env.Schema != SchemaV1 {
		return c.fail("schema", ErrUnknownSchema, fmt.Sprintf("schema %q is not %q: this agent is too old or the document is not a modelfleet document", env.Schema, SchemaV1))
	}
	switch env.Type {
	case want:
	case KindRoot, KindModel, KindAssignment:
		return c.fail("schema", ErrWrongRole, fmt.Sprintf("got a %s document where a %s document belongs", env.Type, want))
	default:
		return c.fail("schema", ErrUnknownSchema, fmt.Sprintf("unknown document type %q", env.Type))
	}
	c.pass("schema")
	return nil
}

// root decodes and validates the root in env, recording the "structure"
// check and naming the document by its version.
func (c *checklist) root(env *Envelope) (*Root, error) {
	root, err := decodeRoot(env.signed)
	if err != nil {
		return nil, c.failErr("structure", err)
	}
	if err := root.Validate(); err != nil {
		return nil, c.failErr("structure", err)
	}
	c.name = fmt.Sprintf("version %d", root.Version)
	c.pass("structure")
	return root, nil
}

// size refuses a document over maxBytes before anything parses it,
// recording the "size" check.
func (c *checklist) size(raw []byte, maxBytes int64) error {
	if int64(len(raw)) > maxBytes {
		return c.fail("size", ErrDocTooLarge, fmt.Sprintf("%d bytes, limit %d", len(raw), maxBytes))
	}
	c.pass("size")
	return nil
}
