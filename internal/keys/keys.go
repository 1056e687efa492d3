// Package keys keeps modelfleet signing keys in files: one PEM file per
// private key and the signed root.json of a key directory, created by
// `fleethub keys init` and moved forward by `fleethub keys rotate`.
//
// # File format
//
// A private key file holds one PEM block of type "PRIVATE KEY" with the
// PKCS#8 encoding of an ed25519 key (the same file `openssl genpkey
// -algorithm ed25519` writes). It is created with mode 0600 and read only
// when neither group nor others may read it. Nothing else is stored in it:
// a key's ID is derived from its public key (manifest.KeyID) and its role
// from root.json.
//
// # Key directory
//
//	root.json                      the current signed root (mode 0644)
//	root.<N>.json                  every earlier root version, kept so that
//	                               agents that missed a rotation can catch up
//	<role>-<keyid[:16]>.pem        private keys of roles root, release, director
//	retired/                       private keys no role lists any more
//
// In production the root keys (and usually the release keys) do not stay in
// this directory: move them offline after init and bring a threshold of them
// back for a rotation. Only the director key lives with the hub.
//
// Every write goes to a temporary file in the same directory, is fsynced,
// then renamed (or linked, when the file must not exist yet), and the
// directory is fsynced.
package keys

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/modelfleet/modelfleet/manifest"
)

// PEMType is the PEM block type of private key files.
const PEMType = "PRIVATE KEY"

// Errors callers branch on.
var (
	// ErrInsecureKeyFile: the private key file is readable by group or others.
	ErrInsecureKeyFile = errors.New("private key file is readable by group or others")
	// ErrExists: the file to create exists already; keys are never overwritten.
	ErrExists = errors.New("file exists")
)

// WritePrivateKey stores priv at path with mode 0600. It refuses to replace
// an existing file (ErrExists).
func WritePrivateKey(path string, priv ed25519.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("encode private key %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: PEMType, Bytes: der})
	return CreateFileAtomic(path, data, 0o600)
}

// ReadPrivateKey reads an ed25519 private key file. It returns an error
// wrapping ErrInsecureKeyFile, without reading the key, when the file mode
// lets group or others read or write it.
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	defer f.Close()
	// Stat the open file, not the path, so the mode checked is the mode of
	// the bytes read.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read private key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("read private key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %04o; run `chmod 600 %s` (and check who could have copied it)", ErrInsecureKeyFile, path, perm, path)
	}
	const maxKeyFile = 64 << 10
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("read private key %s: larger than %d bytes, not a key file", path, maxKeyFile)
	}
	block, rest := pem.Decode(data)
	if block == nil || block.Type != PEMType {
		return nil, fmt.Errorf("read private key %s: no PEM %q block", path, PEMType)
	}
	if len(pemTrim(rest)) != 0 {
		return nil, fmt.Errorf("read private key %s: data after the PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read private key %s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read private key %s: a %T, want ed25519", path, key)
	}
	return priv, nil
}

// LoadSigner reads a private key file as a manifest.Signer.
func LoadSigner(path string) (*manifest.Ed25519Signer, error) {
	priv, err := ReadPrivateKey(path)
	if err != nil {
		return nil, err
	}
	return manifest.NewEd25519Signer(priv)
}

func pemTrim(b []byte) []byte { return bytes.TrimSpace(b) }

// WriteFileAtomic replaces path with data: write to a temporary file in the
// same directory, fsync, rename over path, fsync the directory. Readers see
// the old or the new content, never a torn file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, data, perm, true)
}

// CreateFileAtomic is WriteFileAtomic for a file that must not exist yet: it
// returns an error wrapping ErrExists instead of replacing one.
func CreateFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeAtomic(path, data, perm, false)
}

func writeAtomic(path string, data []byte, perm os.FileMode, replace bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		os.Remove(tmpName) // after a rename or link this is a no-op or drops the extra name
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		tmp = nil
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp = nil
	if replace {
		err = os.Rename(tmpName, path)
	} else {
		// link(2) fails when path exists: an atomic create-if-absent.
		err = os.Link(tmpName, path)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w: refusing to overwrite it", path, ErrExists)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
