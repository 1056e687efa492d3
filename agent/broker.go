package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/modelfleet/modelfleet/internal/atomicfile"
	"github.com/modelfleet/modelfleet/internal/bus"
)

// Broker connection states in BrokerStatus.State.
const (
	// BrokerConnecting: not connected yet, or reconnecting after a loss.
	BrokerConnecting = "connecting"
	// BrokerRefused: the broker (or its TLS layer) rejected the agent's
	// credentials; the agent retries with backoff until they are fixed.
	BrokerRefused = "refused"
	// BrokerConnected: connected and subscribed.
	BrokerConnected = "connected"
	// BrokerStopped: the agent stopped.
	BrokerStopped = "stopped"
)

// BrokerStatusFile is the name of the broker status file in the data
// directory.
const BrokerStatusFile = "broker.json"

// brokerStatusSaveEvery bounds how often an unchanged failure rewrites the
// status file (only the attempt count changed).
const brokerStatusSaveEvery = time.Minute

// BrokerStatus is the agent's view of its MQTT connection. The agent keeps
// it in BrokerStatusFile in its data directory, so `fleetagent status` shows
// it whether or not the agent runs.
type BrokerStatus struct {
	// Device is the agent's device ID.
	Device string `json:"device,omitempty"`
	// State is BrokerConnecting, BrokerRefused, BrokerConnected or
	// BrokerStopped.
	State string `json:"state"`
	// Brokers are the configured broker URLs.
	Brokers []string `json:"brokers"`
	// Since is when State was entered.
	Since time.Time `json:"since"`
	// LastError is the reason of the last failed connection attempt or of
	// the last connection loss; LastErrorAt is when it happened.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// FailedAttempts counts failed attempts since the last connection.
	FailedAttempts int `json:"failed_attempts"`
	// Hint says what the operator should do about LastError.
	Hint string `json:"hint,omitempty"`
	// Updated is when the agent last wrote the status.
	Updated time.Time `json:"updated"`
}

// brokerTracker keeps the BrokerStatus and persists it. It is safe for
// concurrent use: paho's goroutines report into it.
type brokerTracker struct {
	path string

	mu     sync.Mutex // guards all following fields
	st     BrokerStatus
	saved  time.Time
	logErr func(error)
}

func newBrokerTracker(dataDir, device string, brokers []string, logErr func(error)) *brokerTracker {
	now := time.Now().UTC()
	return &brokerTracker{
		path:   filepath.Join(dataDir, BrokerStatusFile),
		st:     BrokerStatus{Device: device, State: BrokerConnecting, Brokers: brokers, Since: now},
		logErr: logErr,
	}
}

// set moves to state, keeping the last error for the record.
func (b *brokerTracker) set(state string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.st.State != state {
		b.st.State, b.st.Since = state, time.Now().UTC()
	}
	if state == BrokerConnected {
		b.st.FailedAttempts, b.st.Hint = 0, ""
	}
	b.saveLocked(true)
}

// failed records a failed connection attempt or a lost connection. It
// returns the new state when the state changed, "" otherwise.
func (b *brokerTracker) failed(err error, attempt bool) (entered string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now().UTC()
	state, hint := BrokerConnecting, ""
	if bus.IsRefused(err) {
		state = BrokerRefused
		hint = "the broker rejects this device's credentials: update mqtt.username/mqtt.password or mqtt.cert_file/mqtt.key_file " +
			"(e.g. after a rotation) and restart the agent; installed models keep serving meanwhile"
	}
	changed := b.st.State != state || b.st.LastError != err.Error()
	if b.st.State != state {
		b.st.State, b.st.Since, entered = state, now, state
	}
	b.st.LastError, b.st.LastErrorAt, b.st.Hint = err.Error(), &now, hint
	if attempt {
		b.st.FailedAttempts++
	}
	b.saveLocked(changed)
	return entered
}

// saveLocked writes the status file when force, or when the last write is
// older than brokerStatusSaveEvery.
func (b *brokerTracker) saveLocked(force bool) {
	now := time.Now().UTC()
	if !force && now.Sub(b.saved) < brokerStatusSaveEvery {
		return
	}
	b.st.Updated = now
	data, err := json.MarshalIndent(b.st, "", "  ")
	if err == nil {
		err = atomicfile.Write(b.path, append(data, '\n'), 0o644)
	}
	if err != nil {
		b.logErr(fmt.Errorf("write broker status: %w", err))
		return
	}
	b.saved = now
}

func (b *brokerTracker) status() BrokerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.st
	st.Brokers = append([]string(nil), b.st.Brokers...)
	return st
}

// BrokerStatus returns the current state of the MQTT connection. Before Run
// it is the zero value.
func (a *Agent) BrokerStatus() BrokerStatus {
	a.mu.Lock()
	b := a.broker
	a.mu.Unlock()
	if b == nil {
		return BrokerStatus{}
	}
	return b.status()
}

// ReadBrokerStatus reads the broker status an agent with data directory
// dataDir wrote last. It returns an error wrapping os.ErrNotExist when the
// agent has not run since this file was introduced.
func ReadBrokerStatus(dataDir string) (BrokerStatus, error) {
	var st BrokerStatus
	b, err := os.ReadFile(filepath.Join(dataDir, BrokerStatusFile))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%s: %w", BrokerStatusFile, errors.Join(err, errors.New("the file is damaged; the agent rewrites it on its next connection event")))
	}
	return st, nil
}
