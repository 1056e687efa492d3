// Package mqttpasswd writes Mosquitto password files: the format
// mosquitto_passwd produces and Mosquitto 2.0 reads with password_file. The
// hub's broker config generator uses it for `--auth password`, and
// internal/testenv for brokers with users.
package mqttpasswd

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"strings"
)

// Mosquitto 2.0 stores passwords as "$7$<iterations>$<base64 salt>$<base64
// hash>": PBKDF2-HMAC-SHA512 over the raw salt bytes, with the parameters
// mosquitto_passwd uses by default.
const (
	// Iterations is mosquitto_passwd's default PBKDF2 iteration count.
	Iterations = 101
	saltBytes  = 12
	hashBytes  = 64
)

// Hash returns the password file hash of password with the given salt.
func Hash(password string, salt []byte, iterations int) (string, error) {
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, hashBytes)
	if err != nil {
		return "", fmt.Errorf("pbkdf2: %w", err)
	}
	return fmt.Sprintf("$7$%d$%s$%s", iterations,
		base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(key)), nil
}

// File renders a password file for users (name → password) in the order
// given by names, each with a fresh random salt. A name must be non-empty
// and contain no ':' or newline.
func File(names []string, users map[string]string) ([]byte, error) {
	var b strings.Builder
	for _, name := range names {
		if name == "" || strings.ContainsAny(name, ":\n\r") {
			return nil, fmt.Errorf("user name %q: must be non-empty without ':' or newline", name)
		}
		salt := make([]byte, saltBytes)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		h, err := Hash(users[name], salt, Iterations)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s:%s\n", name, h)
	}
	return []byte(b.String()), nil
}
