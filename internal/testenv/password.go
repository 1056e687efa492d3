package testenv

import "github.com/modelfleet/modelfleet/internal/mqttpasswd"

// The password file format lives in internal/mqttpasswd, shared with the
// hub's broker config generator.
const mosquittoPBKDF2Iterations = mqttpasswd.Iterations

// mosquittoPasswordHash returns the password file hash of password with the
// given salt.
func mosquittoPasswordHash(password string, salt []byte, iterations int) (string, error) {
	return mqttpasswd.Hash(password, salt, iterations)
}

// mosquittoPasswordFile renders a password file for users (name → password)
// in the order given by names, each with a fresh random salt.
func mosquittoPasswordFile(names []string, users map[string]string) ([]byte, error) {
	return mqttpasswd.File(names, users)
}
