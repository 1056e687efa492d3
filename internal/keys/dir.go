package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/modelfleet/modelfleet/manifest"
)

// File names in a key directory.
const (
	RootFile   = "root.json"
	RetiredDir = "retired"
	keySuffix  = ".pem"
)

// RoleSpec is how many keys a role has and how many of them must sign.
type RoleSpec struct {
	// Keys is the number of keys.
	Keys int `json:"keys"`
	// Threshold is how many distinct keys must sign.
	Threshold int `json:"threshold"`
}

// InitOptions configures Init.
type InitOptions struct {
	// Root, Release and Director size the three roles.
	Root, Release, Director RoleSpec
	// Expires is how long the root is valid.
	Expires time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the key source; nil means crypto/rand.
	Rand io.Reader
}

// DefaultInitOptions returns one key per role, threshold 1, and a root valid
// for one year. For production, raise the root role to e.g. 2 of 3 keys.
func DefaultInitOptions() InitOptions {
	one := RoleSpec{Keys: 1, Threshold: 1}
	return InitOptions{Root: one, Release: one, Director: one, Expires: 365 * 24 * time.Hour}
}

// KeyFile describes one private key file.
type KeyFile struct {
	// Role is root, release or director.
	Role string `json:"role"`
	// KeyID is the key's ID (manifest.KeyID).
	KeyID string `json:"keyid"`
	// Path is the file.
	Path string `json:"path"`
}

// InitResult is what Init created.
type InitResult struct {
	// RootPath is the root.json written.
	RootPath string `json:"root_path"`
	// Root is its content.
	Root *manifest.Root `json:"root"`
	// Keys lists the private key files created.
	Keys []KeyFile `json:"keys"`
}

// Init creates a key directory: fresh keys for the roles root, release and
// director, and root.json (version 1) signed by the root keys. It refuses
// (ErrExists) when dir already holds a root.json or key files.
func Init(ctx context.Context, dir string, opts InitOptions) (*InitResult, error) {
	now, rnd := clock(opts.Now), source(opts.Rand)
	if opts.Expires <= 0 {
		return nil, errors.New("keys init: the root's validity must be positive")
	}
	specs := map[string]RoleSpec{manifest.RoleRoot: opts.Root, manifest.RoleRelease: opts.Release, manifest.RoleDirector: opts.Director}
	for _, role := range manifest.Roles {
		if err := specs[role].check(role); err != nil {
			return nil, fmt.Errorf("keys init: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keys init: %w", err)
	}
	if err := checkEmpty(dir); err != nil {
		return nil, fmt.Errorf("keys init: %w", err)
	}
	root := &manifest.Root{Version: 1, Expires: now().UTC().Add(opts.Expires).Truncate(time.Second)}
	res := &InitResult{RootPath: filepath.Join(dir, RootFile), Root: root}
	var rootSigners []manifest.Signer
	for _, role := range manifest.Roles {
		keys, files, err := newKeys(dir, role, specs[role].Keys, rnd)
		res.Keys = append(res.Keys, files...)
		if err != nil {
			return nil, fmt.Errorf("keys init: %w", err)
		}
		r, err := addRole(root, keys, specs[role].Threshold)
		if err != nil {
			return nil, fmt.Errorf("keys init: %w", err)
		}
		if err := root.SetRole(role, r); err != nil {
			return nil, fmt.Errorf("keys init: %w", err)
		}
		if role == manifest.RoleRoot {
			for _, k := range keys {
				rootSigners = append(rootSigners, k)
			}
		}
	}
	raw, err := manifest.Sign(ctx, root, rootSigners...)
	if err != nil {
		return nil, fmt.Errorf("keys init: %w", err)
	}
	if err := CreateFileAtomic(res.RootPath, raw, 0o644); err != nil {
		return nil, fmt.Errorf("keys init: %w", err)
	}
	return res, nil
}

// RotateOptions configures Rotate.
type RotateOptions struct {
	// Replace maps a role name to its new keys: that many fresh keys with
	// that threshold; zero fields keep the role's current count and
	// threshold. Roles not listed keep their keys.
	Replace map[string]RoleSpec
	// Expires is how long the new root is valid.
	Expires time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand is the key source; nil means crypto/rand.
	Rand io.Reader
}

// RotateResult is what Rotate changed.
type RotateResult struct {
	// RootPath is the root.json written.
	RootPath string `json:"root_path"`
	// Root is the new root.
	Root *manifest.Root `json:"root"`
	// ArchivedRoot is where the previous root.json was kept.
	ArchivedRoot string `json:"archived_root"`
	// NewKeys lists the private key files created.
	NewKeys []KeyFile `json:"new_keys"`
	// Retired lists key files moved to retired/ because no role lists them.
	Retired []KeyFile `json:"retired"`
}

// Rotate writes root version N+1 to dir: the roles in opts.Replace get fresh
// keys, and the root is signed by a threshold of the current root keys AND
// of the new root keys, which must be in dir. Before writing, it checks the
// result with manifest.Verifier.UpdateRoot, as an agent would. The previous
// root stays as root.<N>.json, key files no role lists any more move to
// retired/.
func Rotate(ctx context.Context, dir string, opts RotateOptions) (*RotateResult, error) {
	now, rnd := clock(opts.Now), source(opts.Rand)
	if opts.Expires <= 0 {
		return nil, errors.New("keys rotate: the root's validity must be positive")
	}
	for role := range opts.Replace {
		if !slices.Contains(manifest.Roles, role) {
			return nil, fmt.Errorf("keys rotate: unknown role %q (want root, release or director)", role)
		}
	}
	rootPath := filepath.Join(dir, RootFile)
	oldRaw, err := os.ReadFile(rootPath)
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}
	old, err := manifest.ParseRoot(oldRaw, 0)
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %s: %w", rootPath, err)
	}
	have, err := LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}

	next := old.Next(now().UTC().Add(opts.Expires).Truncate(time.Second))
	res := &RotateResult{RootPath: rootPath, Root: next}
	newSigners := map[string]manifest.Signer{}
	for _, role := range manifest.Roles {
		spec, ok := opts.Replace[role]
		if !ok {
			continue
		}
		cur, _ := old.Role(role)
		if spec.Keys == 0 {
			spec.Keys = len(cur.KeyIDs)
		}
		if spec.Threshold == 0 {
			spec.Threshold = min(cur.Threshold, spec.Keys)
		}
		if err := spec.check(role); err != nil {
			return nil, fmt.Errorf("keys rotate: %w", err)
		}
		keys, files, err := newKeys(dir, role, spec.Keys, rnd)
		res.NewKeys = append(res.NewKeys, files...)
		if err != nil {
			return nil, fmt.Errorf("keys rotate: %w", err)
		}
		r, err := addRole(next, keys, spec.Threshold)
		if err != nil {
			return nil, fmt.Errorf("keys rotate: %w", err)
		}
		if err := next.SetRole(role, r); err != nil {
			return nil, fmt.Errorf("keys rotate: %w", err)
		}
		for _, k := range keys {
			newSigners[k.KeyID()] = k
		}
	}
	next.PruneKeys()

	signers, err := rotationSigners(old, next, have, newSigners)
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}
	newRaw, err := manifest.Sign(ctx, next, signers...)
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}
	// Check the result the way every agent will before anything is replaced.
	v, err := manifest.NewVerifier(oldRaw, manifest.Config{Now: now})
	if err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}
	if _, err := v.UpdateRoot(newRaw); err != nil {
		return nil, fmt.Errorf("keys rotate: the new root would be refused by agents: %w", err)
	}

	res.ArchivedRoot = filepath.Join(dir, fmt.Sprintf("root.%d.json", old.Version))
	if err := CreateFileAtomic(res.ArchivedRoot, oldRaw, 0o644); err != nil {
		if !errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("keys rotate: %w", err)
		}
		if prev, rerr := os.ReadFile(res.ArchivedRoot); rerr != nil || !bytes.Equal(prev, oldRaw) {
			return nil, fmt.Errorf("keys rotate: %s exists with other content: %w", res.ArchivedRoot, err)
		}
	}
	if err := WriteFileAtomic(rootPath, newRaw, 0o644); err != nil {
		return nil, fmt.Errorf("keys rotate: %w", err)
	}
	res.Retired, err = retire(dir, next, have)
	if err != nil {
		return res, fmt.Errorf("keys rotate: root.json written, but retiring old keys failed: %w", err)
	}
	return res, nil
}

// rotationSigners picks a threshold of the old root keys and of the new root
// keys from the keys at hand.
func rotationSigners(old, next *manifest.Root, have map[string]LoadedKey, fresh map[string]manifest.Signer) ([]manifest.Signer, error) {
	pick := func(which string, role manifest.Role) ([]manifest.Signer, error) {
		var out []manifest.Signer
		for _, id := range role.KeyIDs {
			if len(out) == role.Threshold {
				break
			}
			if s, ok := fresh[id]; ok {
				out = append(out, s)
			} else if k, ok := have[id]; ok {
				out = append(out, k.Signer)
			}
		}
		if len(out) < role.Threshold {
			return nil, fmt.Errorf("%s root role needs %d signatures, only %d of its private keys are in the directory: copy the missing root keys back in", which, role.Threshold, len(out))
		}
		return out, nil
	}
	a, err := pick("the current", old.Roles.Root)
	if err != nil {
		return nil, err
	}
	b, err := pick("the new", next.Roles.Root)
	if err != nil {
		return nil, err
	}
	out := a
	for _, s := range b {
		if !slices.ContainsFunc(out, func(x manifest.Signer) bool { return x.KeyID() == s.KeyID() }) {
			out = append(out, s)
		}
	}
	return out, nil
}

// retire moves key files that no role of root lists into retired/.
func retire(dir string, root *manifest.Root, have map[string]LoadedKey) ([]KeyFile, error) {
	var out []KeyFile
	ids := make([]string, 0, len(have))
	for id := range have {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if _, used := root.Keys[id]; used {
			continue
		}
		rdir := filepath.Join(dir, RetiredDir)
		if err := os.MkdirAll(rdir, 0o700); err != nil {
			return out, err
		}
		k := have[id]
		dst := filepath.Join(rdir, filepath.Base(k.Path))
		if _, err := os.Lstat(dst); err == nil {
			return out, fmt.Errorf("%s exists: %w", dst, ErrExists)
		}
		if err := os.Rename(k.Path, dst); err != nil {
			return out, err
		}
		out = append(out, KeyFile{Role: k.Role, KeyID: id, Path: dst})
		if err := syncDir(rdir); err != nil {
			return out, err
		}
		if err := syncDir(dir); err != nil {
			return out, err
		}
	}
	return out, nil
}

// LoadedKey is a private key file read from a key directory.
type LoadedKey struct {
	KeyFile
	// Signer signs with the key.
	Signer *manifest.Ed25519Signer
}

// LoadDir reads every *.pem private key file directly in dir, keyed by key
// ID. The role is taken from the file name (<role>-….pem). Any unreadable or
// insecure key file is an error.
func LoadDir(dir string) (map[string]LoadedKey, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*"+keySuffix))
	if err != nil {
		return nil, err
	}
	out := map[string]LoadedKey{}
	for _, p := range paths {
		s, err := LoadSigner(p)
		if err != nil {
			return nil, err
		}
		role, _, _ := strings.Cut(filepath.Base(p), "-")
		out[s.KeyID()] = LoadedKey{KeyFile: KeyFile{Role: role, KeyID: s.KeyID(), Path: p}, Signer: s}
	}
	return out, nil
}

// KeyFileName returns the file name of a role's key: <role>-<keyid[:16]>.pem.
func KeyFileName(role, keyID string) string {
	if len(keyID) > 16 {
		keyID = keyID[:16]
	}
	return role + "-" + keyID + keySuffix
}

func newKeys(dir, role string, n int, rnd io.Reader) ([]*manifest.Ed25519Signer, []KeyFile, error) {
	var keys []*manifest.Ed25519Signer
	var files []KeyFile
	for range n {
		k, err := manifest.GenerateEd25519Signer(rnd)
		if err != nil {
			return nil, files, err
		}
		path := filepath.Join(dir, KeyFileName(role, k.KeyID()))
		if err := WritePrivateKey(path, k.PrivateKey()); err != nil {
			return nil, files, err
		}
		keys = append(keys, k)
		files = append(files, KeyFile{Role: role, KeyID: k.KeyID(), Path: path})
	}
	return keys, files, nil
}

func addRole(root *manifest.Root, keys []*manifest.Ed25519Signer, threshold int) (manifest.Role, error) {
	r := manifest.Role{Threshold: threshold}
	for _, k := range keys {
		id, err := root.AddKey(k.PublicKey())
		if err != nil {
			return r, err
		}
		r.KeyIDs = append(r.KeyIDs, id)
	}
	return r, nil
}

func (s RoleSpec) check(role string) error {
	if s.Keys < 1 || s.Keys > 16 {
		return fmt.Errorf("role %s: %d keys, want 1 to 16", role, s.Keys)
	}
	if s.Threshold < 1 || s.Threshold > s.Keys {
		return fmt.Errorf("role %s: threshold %d, want 1 to its %d keys", role, s.Threshold, s.Keys)
	}
	return nil
}

func checkEmpty(dir string) error {
	if _, err := os.Lstat(filepath.Join(dir, RootFile)); err == nil {
		return fmt.Errorf("%s already holds a %s: %w (use keys rotate to change keys)", dir, RootFile, ErrExists)
	}
	if keys, _ := filepath.Glob(filepath.Join(dir, "*"+keySuffix)); len(keys) > 0 {
		return fmt.Errorf("%s already holds key files such as %s: %w", dir, filepath.Base(keys[0]), ErrExists)
	}
	return nil
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}

func source(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}
