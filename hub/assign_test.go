package hub

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/hub/store/sqlite"
	"github.com/modelfleet/modelfleet/internal/bus"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/manifest"
)

// recordingPublisher is the MQTT client of the issuing tests: it records
// what is published, fails the devices in fail, and can hold every call at
// a gate.
type recordingPublisher struct {
	topics bus.Topics
	fail   map[string]error

	mu        sync.Mutex // guards all following fields
	published map[string][][]byte
	order     []string // "start <device>" and "done <device>", in order
	inFlight  int
	maxFlight int
	gate      func(inFlight int) // called with mu released
}

func (p *recordingPublisher) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	device, kind, _, ok := p.topics.ParseDevice(topic)
	if !ok || kind != bus.KindAssignment {
		return fmt.Errorf("published on %s, not an assignment topic", topic)
	}
	if qos != 1 || !retained {
		return fmt.Errorf("published with qos %d retained %t, want qos 1 retained", qos, retained)
	}
	p.mu.Lock()
	p.inFlight++
	p.maxFlight = max(p.maxFlight, p.inFlight)
	n := p.inFlight
	p.order = append(p.order, "start "+device)
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		gate(n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	p.order = append(p.order, "done "+device)
	if err := p.fail[device]; err != nil {
		return err
	}
	if p.published == nil {
		p.published = map[string][][]byte{}
	}
	p.published[device] = append(p.published[device], payload)
	return nil
}

// issueFixture is a hub with a real SQLite store holding devices, and the
// director key that signs.
func issueFixture(t *testing.T, devices ...string) (*Hub, *sqlite.Store, []manifest.Signer) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	for _, d := range devices {
		if err := st.UpsertDevice(t.Context(), d, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	h := New(DefaultConfig(), Deps{Store: st})
	return h, st, []manifest.Signer{fleettest.Key(t, "director")}
}

func batchOf(devices ...string) []assignment {
	out := make([]assignment, len(devices))
	for i, d := range devices {
		out[i] = assignment{device: d}
	}
	return out
}

// TestIssuePartialFailure: in a batch whose publication fails for one
// device, the others are published and saved; the failed one is reported
// by name, not saved and not given an expiry, so the caller retries it,
// and its next assignment's sequence is above the one that was drawn for
// it and skipped.
func TestIssuePartialFailure(t *testing.T) {
	devices := []string{"edge-1", "edge-2", "edge-3", "edge-4"}
	h, st, signers := issueFixture(t, devices...)
	ctx := t.Context()
	brokerDown := errors.New("broker went away")
	pub := &recordingPublisher{topics: h.topics, fail: map[string]error{"edge-2": brokerDown}}

	seqs := make([]uint64, len(devices))
	errs := h.issueAll(ctx, st, pub, signers, batchOf(devices...), seqs)
	if len(errs) != 1 || !errors.Is(errs[0], brokerDown) || !strings.Contains(errs[0].Error(), "edge-2") {
		t.Fatalf("errors %v, want one for edge-2 wrapping %q", errs, brokerDown)
	}
	if want := []uint64{1, 0, 1, 1}; !slices.Equal(seqs, want) {
		t.Errorf("sequences %v, want %v", seqs, want)
	}
	for i, d := range devices {
		last, err := st.LastAssignment(ctx, d)
		if d == "edge-2" {
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("edge-2's failed assignment was saved: %+v, %v", last, err)
			}
			if _, ok := h.expiry[d]; ok {
				t.Error("edge-2 got an expiry although its assignment failed")
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		if got := pub.published[d]; len(got) != 1 || string(got[0]) != string(last.Envelope) {
			t.Errorf("%s: saved envelope is not the one published (%d published)", d, len(got))
		}
		a, err := decodeAssignment(last.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		if a.Device != d || a.Sequence != seqs[i] || last.Sequence != seqs[i] {
			t.Errorf("%s: saved %s sequence %d (stored %d), want sequence %d", d, a.Device, a.Sequence, last.Sequence, seqs[i])
		}
		if !h.expiry[d].Equal(a.Expires) {
			t.Errorf("%s: expiry %v, want the assignment's %v", d, h.expiry[d], a.Expires)
		}
	}
	m := h.Metrics()
	if m.PublishFailures != 1 || m.PublishLatency.Count != 3 {
		t.Errorf("metrics: %d failures, %d latencies; want 1 and 3", m.PublishFailures, m.PublishLatency.Count)
	}

	// The retry goes through with the next sequence.
	delete(pub.fail, "edge-2")
	seqs = make([]uint64, 1)
	if errs := h.issueAll(ctx, st, pub, signers, batchOf("edge-2"), seqs); len(errs) > 0 {
		t.Fatal(errs)
	}
	if last, err := st.LastAssignment(ctx, "edge-2"); err != nil || seqs[0] != 2 || last.Sequence != 2 {
		t.Errorf("retried edge-2: sequence %d, saved %+v, %v; want 2 (1 was drawn and skipped)", seqs[0], last, err)
	}
}

// TestIssueRepeatedDevice: a device listed twice in one batch gets two
// assignments, the second with the higher sequence, published only after
// the broker acknowledged the first (so the retained one is the newest)
// and saved last.
func TestIssueRepeatedDevice(t *testing.T) {
	h, st, signers := issueFixture(t, "edge-1", "edge-2")
	pub := &recordingPublisher{topics: h.topics}
	seqs := make([]uint64, 3)
	if errs := h.issueAll(t.Context(), st, pub, signers, batchOf("edge-1", "edge-2", "edge-1"), seqs); len(errs) > 0 {
		t.Fatal(errs)
	}
	if !slices.Equal(seqs, []uint64{1, 1, 2}) {
		t.Errorf("sequences %v, want [1 1 2]", seqs)
	}
	first := slices.Index(pub.order, "done edge-1")
	second := slices.Index(pub.order[first+1:], "start edge-1")
	if first < 0 || second < 0 {
		t.Fatalf("publication order %v: want edge-1 acknowledged before it is published again", pub.order)
	}
	if last, err := st.LastAssignment(t.Context(), "edge-1"); err != nil || last.Sequence != 2 {
		t.Errorf("edge-1's saved assignment %+v, %v; want sequence 2", last, err)
	}
}

// TestIssueBoundsInFlight: publications overlap, up to maxInFlight at a
// time and never more.
func TestIssueBoundsInFlight(t *testing.T) {
	n := maxInFlight*2 + 7
	devices := make([]string, n)
	for i := range devices {
		devices[i] = fmt.Sprintf("edge-%04d", i)
	}
	h, st, signers := issueFixture(t, devices...)
	// The first maxInFlight publications wait until all of them are in
	// flight, so without concurrency the test fails, and then a while
	// longer, for one more to start if the bound let it.
	full := make(chan struct{})
	giveUp := make(chan struct{})
	defer time.AfterFunc(time.Minute, func() { close(giveUp) }).Stop()
	var once sync.Once
	pub := &recordingPublisher{topics: h.topics}
	pub.gate = func(inFlight int) {
		if inFlight >= maxInFlight {
			once.Do(func() { time.AfterFunc(100*time.Millisecond, func() { close(full) }) })
		}
		select {
		case <-full:
		case <-giveUp: // publications do not overlap: reported below
		}
	}
	seqs := make([]uint64, n)
	if errs := h.issueAll(t.Context(), st, pub, signers, batchOf(devices...), seqs); len(errs) > 0 {
		t.Fatal(batchError(n, errs))
	}
	select {
	case <-full:
	default:
		t.Fatalf("never %d publications in flight at once (at most %d)", maxInFlight, pub.maxFlight)
	}
	if pub.maxFlight != maxInFlight {
		t.Errorf("at most %d publications in flight, want %d", pub.maxFlight, maxInFlight)
	}
	if len(pub.published) != n {
		t.Errorf("%d devices published, want %d", len(pub.published), n)
	}
}

// TestBatchError: one failure of one is the error itself; more are
// counted, the first few shown, all of them wrapped.
func TestBatchError(t *testing.T) {
	errA, errB := errors.New("a failed"), errors.New("b failed")
	if batchError(3, nil) != nil {
		t.Error("no failures: want nil")
	}
	if err := batchError(1, []error{errA}); err != errA {
		t.Errorf("batch of one: %v, want the error itself", err)
	}
	errs := []error{errA, errB, errA, errA, errB}
	err := batchError(10, errs)
	if !errors.Is(err, errA) || !errors.Is(err, errB) {
		t.Errorf("%v does not wrap every failure", err)
	}
	if want := "5 of 10 assignments failed: a failed; b failed; a failed; and 2 more"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}
