package brokerconf

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/modelfleet/modelfleet/internal/mqttpasswd"
)

// passwordBytes is the entropy of a generated password: 192 bits.
const passwordBytes = 24

func randomPassword() (string, error) {
	b := make([]byte, passwordBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func passwordFile(names []string, passwords map[string]string) ([]byte, error) {
	f, err := mqttpasswd.File(names, passwords)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	return f, nil
}
