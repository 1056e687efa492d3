package agent_test

import (
	"strings"
	"testing"

	"github.com/modelfleet/modelfleet/examples/models"
	"github.com/modelfleet/modelfleet/internal/fleettest"
	"github.com/modelfleet/modelfleet/internal/report"
)

// TestRollbackToServingVersionIsActive is what happens to a device in the
// first wave of a bad release: it serves v1, refuses the broken v2 and goes
// on serving v1 (phase rolled-back), and then the hub rolls the rollout
// back, assigning v1 again. The device serves what is asked: the phase is
// active again, v2's error is gone, and an event says so. The failure, in
// the state and in the event, names the model version and the step once,
// with ONNX Runtime's message, and not the blob's path.
func TestRollbackToServingVersionIsActive(t *testing.T) {
	h := newHarness(t)
	h.start()
	v1 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "1.0.0", models.FileV1)
	h.publish(h.trust.Assignment(t, device, 1, v1))
	h.waitState("v1 active", active("1.0.0"))

	from := h.eventCount()
	v2 := h.trust.Publish(t, h.s3.Client, h.s3.Bucket, model, "2.0.0", models.FileBroken)
	h.publish(h.trust.Assignment(t, device, 2, v2))
	ev := h.waitEvent("v2 rolled back", from, func(e report.Event) bool {
		return e.Type == report.EventRolledBack && e.Version == "2.0.0"
	})
	s := h.waitState("v2 refused, v1 serving", func(s report.State) bool {
		m := s.Models[model]
		return m.Phase == "rolled-back" && m.Version == "1.0.0" && m.Pending == "" && m.Error != ""
	})
	const cause = "ONNX Runtime cannot load it: "
	for _, c := range []struct{ what, text, prefix, suffix string }{
		{"state error", s.Models[model].Error, "load " + model + "@2.0.0: " + cause, ""},
		{"event reason", ev.Reason, "load failed: " + cause, " (version 1.0.0 keeps serving)"},
	} {
		t.Logf("%s: %s", c.what, c.text)
		if !strings.HasPrefix(c.text, c.prefix) || !strings.HasSuffix(c.text, c.suffix) {
			t.Errorf("%s = %q, want %q…%q", c.what, c.text, c.prefix, c.suffix)
		}
		ort := strings.TrimSuffix(strings.TrimPrefix(c.text, c.prefix), c.suffix)
		if strings.TrimSpace(ort) == "" {
			t.Errorf("%s %q lacks ONNX Runtime's message", c.what, c.text)
		}
		if strings.Contains(c.text, h.cfg.DataDir) || strings.Contains(c.text, "sha256/") {
			t.Errorf("%s names the blob file: %q", c.what, c.text)
		}
		if n := strings.Count(c.text, model+"@"); n > 1 {
			t.Errorf("%s names the model version %d times: %q", c.what, n, c.text)
		}
	}
	assertServes(t, h.agent, "1.0.0", models.SeedV1)

	// The hub's rollback: v1 again, in a newer assignment that allows the
	// downgrade from the last accepted 2.0.0.
	from = h.eventCount()
	doc := fleettest.AssignmentDoc(device, 3, v1)
	doc.Models[0].AllowDowngrade = true
	h.publish(fleettest.Sign(t, doc, h.trust.Director))
	s = h.waitState("v1 active again", func(s report.State) bool {
		return active("1.0.0")(s) && s.Sequence == 3
	})
	if m := s.Models[model]; m.Error != "" || m.Previous != "" && m.Previous != "1.0.0" {
		t.Errorf("after the rollback assignment: %+v, want v1 active without error", m)
	}
	ev = h.waitEvent("confirmation of v1", from, func(e report.Event) bool {
		return e.Type == report.EventInstalled && e.Model == model && e.Version == "1.0.0"
	})
	if !strings.Contains(ev.Reason, "kept serving") || ev.Sequence != 3 {
		t.Errorf("confirmation event = %+v", ev)
	}
	assertServes(t, h.agent, "1.0.0", models.SeedV1)
}
