package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

// setEntry assigns the release manifest env of model to device in mode,
// keeping the device's other models and the entry's bindings and limits.
// downgrade marks a rollback to a lower version. An assignment is always
// published, even when the entry did not change: a new sequence makes the
// agent retry an install it gave up on. Callers hold h.ctl.
func (h *Hub) setEntry(ctx context.Context, device, model, mode string, env []byte, downgrade bool) error {
	st, err := h.store()
	if err != nil {
		return err
	}
	cur, err := h.entries(ctx, st, device)
	if err != nil {
		return err
	}
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
	cur = append(cur, e)
	_, err = h.assign(ctx, device, cur)
	return err
}

// removeEntry drops model in mode from the device's assignment.
func (h *Hub) removeEntry(ctx context.Context, device, model, mode string) error {
	st, err := h.store()
	if err != nil {
		return err
	}
	cur, err := h.entries(ctx, st, device)
	if err != nil {
		return err
	}
	if i := findEntry(cur, model, mode); i >= 0 {
		cur = slices.Delete(slices.Clone(cur), i, i+1)
	}
	_, err = h.assign(ctx, device, cur)
	return err
}

func versionOf(env []byte) string {
	_, v, _ := manifestRef(env)
	return v
}

// assign signs an assignment of entries to device with the next sequence,
// valid for the configured TTL, publishes it retained with QoS 1 and saves
// it as the device's last one. It returns the sequence. Callers hold h.ctl.
func (h *Hub) assign(ctx context.Context, device string, entries []manifest.ModelAssignment) (uint64, error) {
	st, err := h.store()
	if err != nil {
		return 0, err
	}
	c, err := h.bus()
	if err != nil {
		return 0, err
	}
	h.mu.Lock()
	signers := h.signers
	h.mu.Unlock()

	models := slices.Clone(entries)
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
	seq, err := st.NextSequence(ctx, device)
	if err != nil {
		return 0, fmt.Errorf("assignment for %s: %w", device, err)
	}
	now := h.now().UTC().Truncate(time.Second)
	doc := &manifest.Assignment{Device: device, Sequence: seq, Issued: now, Expires: now.Add(h.cfg.ttl()), Models: models}
	// The latency metric is real time, whatever clock the hub was given.
	start := time.Now()
	raw, err := manifest.Sign(ctx, doc, signers...)
	if err != nil {
		h.counters.publishFailed()
		return 0, fmt.Errorf("sign assignment for %s: %w", device, err)
	}
	if err := c.Publish(ctx, h.topics.Assignment(device), 1, true, raw); err != nil {
		h.counters.publishFailed()
		return 0, fmt.Errorf("publish assignment %d for %s: %w", seq, device, err)
	}
	h.counters.published(time.Since(start))
	if err := st.SaveAssignment(ctx, store.SignedAssignment{Device: device, Sequence: seq, Envelope: raw}); err != nil {
		return 0, fmt.Errorf("save assignment %d for %s (published): %w", seq, device, err)
	}
	h.expiry[device] = doc.Expires
	h.log.Info("published assignment", "device", device, "sequence", seq, "models", len(models), "expires", doc.Expires)
	return seq, nil
}

// refreshInterval is how often the refresher looks for assignments about
// to expire: often enough that none slips through the margin.
func (h *Hub) refreshInterval() time.Duration {
	return max(h.cfg.tick(), min(h.cfg.refreshMargin()/4, time.Minute))
}

// refresh re-issues, with the same models and a new sequence and expiry,
// every assignment that has less than the refresh margin left (or has
// expired: a device that was offline gets a valid one when it returns).
// Callers hold h.ctl.
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
	for _, d := range devices {
		if ctx.Err() != nil {
			return
		}
		exp, known := h.expiry[d.ID]
		var last *manifest.Assignment
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
			if last, err = decodeAssignment(sa.Envelope); err != nil {
				h.log.Error("refresh", "device", d.ID, "err", err)
				continue
			}
			exp = last.Expires
			h.expiry[d.ID] = exp
		}
		if exp.IsZero() || exp.Sub(now) >= h.cfg.refreshMargin() {
			continue
		}
		entries, err := h.entries(ctx, st, d.ID)
		if err != nil {
			h.log.Error("refresh", "device", d.ID, "err", err)
			continue
		}
		if _, err := h.assign(ctx, d.ID, entries); err != nil {
			h.log.Error("refresh assignment", "device", d.ID, "err", err)
			continue
		}
	}
}
