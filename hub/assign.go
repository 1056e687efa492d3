package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
	"github.com/modelfleet/modelfleet/internal/keys"
	"github.com/modelfleet/modelfleet/manifest"
)

// loadDirector reads root.json from the key directory and the director
// keys it lists, enough of them to meet the director threshold.
func loadDirector(dir string) ([]byte, []manifest.Signer, error) {
	rootPath := filepath.Join(dir, keys.RootFile)
	rootJSON, err := os.ReadFile(rootPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read trust root: %w", err)
	}
	root, err := manifest.ParseRoot(rootJSON, manifest.DefaultMaxDocumentBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("trust root %s: %w", rootPath, err)
	}
	loaded, err := keys.LoadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load keys from %s: %w", dir, err)
	}
	role := root.Roles.Director
	var signers []manifest.Signer
	for _, id := range role.KeyIDs {
		if k, ok := loaded[id]; ok {
			signers = append(signers, k.Signer)
		}
	}
	if len(signers) == 0 || len(signers) < role.Threshold {
		return nil, nil, fmt.Errorf("key directory %s holds %d of the %d director keys root.json lists, and %d must sign: agents would reject every assignment",
			dir, len(signers), len(role.KeyIDs), role.Threshold)
	}
	return rootJSON, signers, nil
}

// TrustRoot returns the root.json the hub publishes to agents: the current
// root, against which releases signed offline are verified. It returns
// ErrNotRunning until Run has loaded it.
func (h *Hub) TrustRoot() ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rootJSON == nil {
		return nil, ErrNotRunning
	}
	return h.rootJSON, nil
}

// decodeAssignment reads the signed part of an assignment envelope the hub
// published itself (so it is not verified again).
func decodeAssignment(raw []byte) (*manifest.Assignment, error) {
	env, err := manifest.ParseEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("stored assignment: %w", err)
	}
	var a manifest.Assignment
	if err := json.Unmarshal(env.Signed, &a); err != nil {
		return nil, fmt.Errorf("stored assignment: %w", err)
	}
	return &a, nil
}

// manifestRef returns the name and version of a model manifest envelope.
func manifestRef(raw []byte) (name, version string, err error) {
	env, err := manifest.ParseEnvelope(raw)
	if err != nil {
		return "", "", err
	}
	var m struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(env.Signed, &m); err != nil {
		return "", "", err
	}
	return m.Name, m.Version, nil
}

// entries returns the models of the device's last published assignment:
// the device's desired state, which the controller edits one model at a
// time. A device never assigned has none.
func (h *Hub) entries(ctx context.Context, st Store, device string) ([]manifest.ModelAssignment, error) {
	last, err := st.LastAssignment(ctx, device)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a, err := decodeAssignment(last.Envelope)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", device, err)
	}
	return a.Models, nil
}

// findEntry returns the index of the entry for model in mode, or -1.
func findEntry(entries []manifest.ModelAssignment, model, mode string) int {
	for i, e := range entries {
		if e.Mode != mode {
			continue
		}
		if name, _, err := manifestRef(e.Manifest); err == nil && name == model {
			return i
		}
	}
	return -1
}

// entryVersion returns the version of model assigned in mode ("" if none).
func entryVersion(entries []manifest.ModelAssignment, model, mode string) string {
	if i := findEntry(entries, model, mode); i >= 0 {
		_, v, _ := manifestRef(entries[i].Manifest)
		return v
	}
	return ""
}

// edit changes a device's entries: its desired state.
type edit func(entries []manifest.ModelAssignment) []manifest.ModelAssignment

// deviceEdit is an edit of one device's entries.
type deviceEdit struct {
	device string
	edit   edit
}

// setEntry returns the edit that assigns the release manifest env of model
// in mode, keeping the device's other models and the entry's bindings and
// limits. downgrade marks a rollback to a lower version. An assignment is
// always published, even when the entry did not change: a new sequence
// makes the agent retry an install it gave up on.
func setEntry(model, mode string, env []byte, downgrade bool) edit {
	return func(cur []manifest.ModelAssignment) []manifest.ModelAssignment {
		e := manifest.ModelAssignment{Manifest: json.RawMessage(env), Mode: mode, AllowDowngrade: downgrade}
		if i := findEntry(cur, model, mode); i >= 0 {
			old := cur[i]
			e.Bindings, e.MaxErrorRatePPM, e.ShadowSamplePPM = old.Bindings, old.MaxErrorRatePPM, old.ShadowSamplePPM
			cur = slices.Delete(slices.Clone(cur), i, i+1)
		}
		if mode == manifest.ModeActive {
			// A shadow of the version that now serves has nothing left to compare.
			if i := findEntry(cur, model, manifest.ModeShadow); i >= 0 {
				if _, v, _ := manifestRef(cur[i].Manifest); v == versionOf(env) {
					cur = slices.Delete(slices.Clone(cur), i, i+1)
				}
			}
		}
		return append(slices.Clone(cur), e)
	}
}

// removeEntry returns the edit that drops model in mode.
func removeEntry(model, mode string) edit {
	return func(cur []manifest.ModelAssignment) []manifest.ModelAssignment {
		if i := findEntry(cur, model, mode); i >= 0 {
			cur = slices.Delete(slices.Clone(cur), i, i+1)
		}
		return cur
	}
}

// sameEntries is the edit that keeps the entries: a refresh.
func sameEntries(cur []manifest.ModelAssignment) []manifest.ModelAssignment { return cur }

// setEntries assigns the release manifest env of model in mode to each of
// devices (see setEntry), as one batch. Callers hold h.ctl.
func (h *Hub) setEntries(ctx context.Context, devices []string, model, mode string, env []byte, downgrade bool) error {
	e := setEntry(model, mode, env, downgrade)
	eds := make([]deviceEdit, len(devices))
	for i, d := range devices {
		eds[i] = deviceEdit{device: d, edit: e}
	}
	return h.editAll(ctx, eds)
}

func versionOf(env []byte) string {
	_, v, _ := manifestRef(env)
	return v
}

// editAll applies each edit to the entries of the device's last published
// assignment and issues the results as one batch (assignAll). A device whose
// entries cannot be read, or whose assignment fails, does not stop the
// others; the error names each one that failed. Each device appears at
// most once: every edit starts from the last published entries, so a
// second edit of one device would undo the first. Callers hold h.ctl.
func (h *Hub) editAll(ctx context.Context, eds []deviceEdit) error {
	st, err := h.store()
	if err != nil {
		return err
	}
	var (
		errs  []error
		batch = make([]assignment, 0, len(eds))
	)
	for _, ed := range eds {
		cur, err := h.entries(ctx, st, ed.device)
		if err != nil {
			errs = append(errs, fmt.Errorf("assignment for %s: %w", ed.device, err))
			continue
		}
		batch = append(batch, assignment{device: ed.device, models: ed.edit(cur)})
	}
	_, failed := h.assignAll(ctx, batch)
	return batchError(len(eds), append(errs, failed...))
}

// maxBatch bounds the assignments issued together: the sequences of a
// batch are drawn in one durable transaction and its published assignments
// saved in another, and its envelopes are held in memory until saved.
const maxBatch = 1000

// maxInFlight bounds the assignments published and not yet acknowledged by
// the broker.
const maxInFlight = 256

// assignment is an assignment to issue: the device and the models it is to
// run.
type assignment struct {
	device string
	models []manifest.ModelAssignment
}

// assignAll signs assignments of their models to the devices, with each
// device's next sequence, valid for the configured TTL, publishes them
// retained with QoS 1 and saves each published one as the device's last.
// It returns the sequences (0 for the assignments that failed) and an error
// for each assignment that failed, naming its device. Callers hold h.ctl.
//
// The work is done in batches of up to maxBatch distinct devices (a device
// listed twice goes into the next batch, after the first is published):
// one durable store write draws the batch's sequences, the assignments are
// signed on every core, published concurrently (up to maxInFlight awaiting
// the broker's acknowledgement), and the published ones are saved in a
// second durable write. So a wave costs two disk syncs and about one broker
// round trip per batch, not two syncs and a round trip per device.
//
// The order per device is the one a single assignment always had: its
// sequence is on disk before it is signed, so no sequence is ever issued
// twice, even after a crash or power loss (agents refuse a replayed or
// lower sequence, docs/trust.md); the assignment is saved only once the
// broker has acknowledged it, so the store never claims a device was sent
// what it was not. A crash between publishing and saving leaves the store
// one assignment behind the device: the hub's start-up reconciliation then
// republishes what the rollouts want with a higher sequence, and the next
// sequence drawn is above the one published, since it was drawn durably.
// An assignment whose publication failed is not saved; the caller reports
// the error (a rollout step then fails and is repeated, the refresher
// retries at its next round), and its drawn sequence is skipped, which
// agents accept as sequences need only increase.
func (h *Hub) assignAll(ctx context.Context, batch []assignment) ([]uint64, []error) {
	seqs := make([]uint64, len(batch))
	if len(batch) == 0 {
		return seqs, nil
	}
	fail := func(err error) ([]uint64, []error) {
		errs := make([]error, len(batch))
		for i, a := range batch {
			errs[i] = fmt.Errorf("assignment for %s: %w", a.device, err)
		}
		return seqs, errs
	}
	st, err := h.store()
	if err != nil {
		return fail(err)
	}
	c, err := h.bus()
	if err != nil {
		return fail(err)
	}
	h.mu.Lock()
	signers := h.signers
	h.mu.Unlock()
	return seqs, h.issueAll(ctx, st, c, signers, batch, seqs)
}

// issueAll is assignAll with its collaborators: it cuts batch into
// batches of distinct devices and issues them one after the other.
func (h *Hub) issueAll(ctx context.Context, st Store, c publisher, signers []manifest.Signer, batch []assignment, seqs []uint64) []error {
	var errs []error
	for start := 0; start < len(batch); {
		end := start
		seen := map[string]bool{}
		for end < len(batch) && end-start < maxBatch && !seen[batch[end].device] {
			seen[batch[end].device] = true
			end++
		}
		errs = append(errs, h.issue(ctx, st, c, signers, batch[start:end], seqs[start:end])...)
		start = end
	}
	return errs
}

// issuing is one assignment on its way through issue.
type issuing struct {
	assignment
	seq  uint64
	doc  *manifest.Assignment
	raw  []byte
	took time.Duration // signing and publishing, for the latency metric
	err  error
}

// publisher is what issue needs of the MQTT client.
type publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// issue is assignAll for a batch of distinct devices: draw, sign, publish,
// save. It fills in seqs and returns the errors of those that failed.
func (h *Hub) issue(ctx context.Context, st Store, c publisher, signers []manifest.Signer, batch []assignment, seqs []uint64) []error {
	items := make([]issuing, len(batch))
	devices := make([]string, len(batch))
	for i, a := range batch {
		models := slices.Clone(a.models)
		if models == nil {
			models = []manifest.ModelAssignment{}
		}
		// A stable order keeps refreshed assignments identical but for the
		// sequence and times.
		slices.SortStableFunc(models, func(a, b manifest.ModelAssignment) int {
			an, _, _ := manifestRef(a.Manifest)
			bn, _, _ := manifestRef(b.Manifest)
			return cmp.Or(cmp.Compare(an, bn), cmp.Compare(a.Mode, b.Mode))
		})
		items[i] = issuing{assignment: assignment{device: a.device, models: models}}
		devices[i] = a.device
	}

	t0 := time.Now()
	h.drawSequences(ctx, st, items, devices)
	t1 := time.Now()
	now := h.now().UTC().Truncate(time.Second)
	h.signAll(ctx, items, signers, now)
	t2 := time.Now()
	h.publishAll(ctx, c, items)
	t3 := time.Now()
	h.saveAll(ctx, st, items)
	h.log.Debug("issued assignments", "devices", len(items), "draw", t1.Sub(t0), "sign", t2.Sub(t1), "publish", t3.Sub(t2), "save", time.Since(t3))

	var errs []error
	for i := range items {
		it := &items[i]
		if it.err != nil {
			errs = append(errs, it.err)
			continue
		}
		seqs[i] = it.seq
		h.expiry[it.device] = it.doc.Expires
		h.log.Info("published assignment", "device", it.device, "sequence", it.seq, "models", len(it.models), "expires", it.doc.Expires)
	}
	return errs
}

// itemError reports whether a batch store write failed because of one of
// its items (unknown device, refused sequence) rather than the database:
// then the others are worth trying one by one.
func itemError(err error) bool {
	return errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrConflict)
}

// drawSequences draws the items' sequences in one durable write; if one
// item spoils the batch, each is drawn on its own.
func (h *Hub) drawSequences(ctx context.Context, st Store, items []issuing, devices []string) {
	got, err := st.NextSequences(ctx, devices)
	if err != nil && len(items) > 1 && itemError(err) {
		for i := range items {
			h.drawSequences(ctx, st, items[i:i+1], devices[i:i+1])
		}
		return
	}
	for i := range items {
		if err != nil {
			items[i].err = fmt.Errorf("assignment for %s: %w", items[i].device, err)
			continue
		}
		items[i].seq = got[i]
	}
}

// signAll signs the items that have a sequence, on every core.
func (h *Hub) signAll(ctx context.Context, items []issuing, signers []manifest.Signer, now time.Time) {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(runtime.GOMAXPROCS(0), len(items)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) {
					return
				}
				it := &items[i]
				if it.err != nil {
					continue
				}
				it.doc = &manifest.Assignment{Device: it.device, Sequence: it.seq, Issued: now, Expires: now.Add(h.cfg.ttl()), Models: it.models}
				// The latency metric is real time, whatever clock the hub was given.
				start := time.Now()
				raw, err := manifest.Sign(ctx, it.doc, signers...)
				if err != nil {
					h.counters.publishFailed()
					it.err = fmt.Errorf("sign assignment for %s: %w", it.device, err)
					continue
				}
				it.raw, it.took = raw, time.Since(start)
			}
		})
	}
	wg.Wait()
}

// publishAll publishes the signed items retained with QoS 1, concurrently,
// with at most maxInFlight awaiting the broker's acknowledgement.
func (h *Hub) publishAll(ctx context.Context, c publisher, items []issuing) {
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			h.counters.publishFailed()
			it.err = fmt.Errorf("publish assignment %d for %s: %w", it.seq, it.device, ctx.Err())
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			if err := c.Publish(ctx, h.topics.Assignment(it.device), 1, true, it.raw); err != nil {
				h.counters.publishFailed()
				it.err = fmt.Errorf("publish assignment %d for %s: %w", it.seq, it.device, err)
				return
			}
			it.took += time.Since(start)
			h.counters.published(it.took)
		})
	}
	wg.Wait()
}

// saveAll saves the published items in one durable write; if one item
// spoils the batch, each is saved on its own.
func (h *Hub) saveAll(ctx context.Context, st Store, items []issuing) {
	var (
		idx []int
		as  []store.SignedAssignment
	)
	for i, it := range items {
		if it.err == nil {
			idx = append(idx, i)
			as = append(as, store.SignedAssignment{Device: it.device, Sequence: it.seq, Envelope: it.raw})
		}
	}
	if len(as) == 0 {
		return
	}
	err := st.SaveAssignments(ctx, as)
	if err != nil && len(as) > 1 && itemError(err) {
		for _, i := range idx {
			h.saveAll(ctx, st, items[i:i+1])
		}
		return
	}
	if err != nil {
		for _, i := range idx {
			it := &items[i]
			it.err = fmt.Errorf("save assignment %d for %s (published): %w", it.seq, it.device, err)
		}
	}
}

// batchError is nil when errs is empty, the one error of a batch of one,
// and otherwise an error that counts the failures of a batch of n, shows
// the first few and wraps them all.
func batchError(n int, errs []error) error {
	switch {
	case len(errs) == 0:
		return nil
	case n == 1 && len(errs) == 1:
		return errs[0]
	}
	return &issueError{total: n, errs: errs}
}

// issueError is the error of a batch of assignments some of which failed.
type issueError struct {
	total int
	errs  []error
}

// issueErrorShown is how many of the failures the message spells out.
const issueErrorShown = 3

func (e *issueError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d assignments failed: ", len(e.errs), e.total)
	for i, err := range e.errs[:min(len(e.errs), issueErrorShown)] {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(err.Error())
	}
	if n := len(e.errs) - issueErrorShown; n > 0 {
		fmt.Fprintf(&b, "; and %d more", n)
	}
	return b.String()
}

func (e *issueError) Unwrap() []error { return e.errs }

// refreshInterval is how often the refresher looks for assignments about
// to expire: often enough that none slips through the margin.
func (h *Hub) refreshInterval() time.Duration {
	return max(h.cfg.tick(), min(h.cfg.refreshMargin()/4, time.Minute))
}

// refresh re-issues, with the same models and a new sequence and expiry,
// every assignment that has less than the refresh margin left (or has
// expired: a device that was offline gets a valid one when it returns), as
// one batch. A failed one keeps its old expiry, so the next round retries
// it. Callers hold h.ctl.
func (h *Hub) refresh(ctx context.Context) {
	st, err := h.store()
	if err != nil {
		return
	}
	devices, err := st.ListDevices(ctx, nil)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Error("refresh: list devices", "err", err)
		}
		return
	}
	now := h.now()
	var due []deviceEdit
	for _, d := range devices {
		if ctx.Err() != nil {
			return
		}
		exp, known := h.expiry[d.ID]
		if !known {
			sa, err := st.LastAssignment(ctx, d.ID)
			if errors.Is(err, store.ErrNotFound) {
				h.expiry[d.ID] = time.Time{}
				continue
			}
			if err != nil {
				h.log.Error("refresh: last assignment", "device", d.ID, "err", err)
				continue
			}
			last, err := decodeAssignment(sa.Envelope)
			if err != nil {
				h.log.Error("refresh", "device", d.ID, "err", err)
				continue
			}
			exp = last.Expires
			h.expiry[d.ID] = exp
		}
		if exp.IsZero() || exp.Sub(now) >= h.cfg.refreshMargin() {
			continue
		}
		due = append(due, deviceEdit{device: d.ID, edit: sameEntries})
	}
	if err := h.editAll(ctx, due); err != nil && ctx.Err() == nil {
		h.log.Error("refresh assignments", "err", err)
	}
}
