package api

import (
	"net/http"
	"time"

	"github.com/modelfleet/modelfleet/hub/store"
)

// DeviceDetail is the answer of GET /api/v1/devices/{id}: the device, its
// most recent events (newest first) and its telemetry of the last minute it
// reported (one rollup per model and version).
type DeviceDetail struct {
	Device    store.Device            `json:"device"`
	Events    []store.Event           `json:"events"`
	Telemetry []store.TelemetryRollup `json:"telemetry"`
}

// LabelsRequest is the body of PUT /api/v1/devices/{id}/labels: hub labels
// to set and hub labels to remove. Hub labels override the labels the
// device reports itself.
type LabelsRequest struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// telemetryLookback bounds the telemetry searched for a device's last report.
const telemetryLookback = time.Hour

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) error {
	sel, err := store.ParseSelector(r.URL.Query().Get("selector"))
	if err != nil {
		return err
	}
	ds, err := s.st.ListDevices(r.Context(), sel)
	if err != nil {
		return err
	}
	if ds == nil {
		ds = []store.Device{}
	}
	writeJSON(w, http.StatusOK, ds)
	return nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	d, err := s.st.GetDevice(r.Context(), id)
	if err != nil {
		return err
	}
	events, err := s.st.ListEvents(r.Context(), id, time.Time{}, DefaultRecentEvents)
	if err != nil {
		return err
	}
	rollups, err := s.st.ListTelemetry(r.Context(), store.TelemetryQuery{
		Devices: []string{id}, Since: s.opts.Now().Add(-telemetryLookback),
	})
	if err != nil {
		return err
	}
	// Rollups come ordered by minute: keep the last minute's.
	var last []store.TelemetryRollup
	for _, ru := range rollups {
		if len(last) > 0 && !ru.Minute.Equal(last[0].Minute) {
			last = last[:0]
		}
		last = append(last, ru)
	}
	if events == nil {
		events = []store.Event{}
	}
	if last == nil {
		last = []store.TelemetryRollup{}
	}
	writeJSON(w, http.StatusOK, DeviceDetail{Device: d, Events: events, Telemetry: last})
	return nil
}

func (s *Server) setLabels(w http.ResponseWriter, r *http.Request) error {
	var req LabelsRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Set) == 0 && len(req.Remove) == 0 {
		return badRequest("no labels to set or remove")
	}
	d, err := s.st.SetLabels(r.Context(), r.PathValue("id"), req.Set, req.Remove)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}
