package api

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/modelfleet/modelfleet/hub/store"
)

// metrics writes the Prometheus text exposition format (version 0.0.4) by
// hand: a few gauges computed from the store on each scrape.
func (s *Server) metrics(w http.ResponseWriter, r *http.Request) error {
	ds, err := s.st.ListDevices(r.Context(), nil)
	if err != nil {
		return err
	}
	rs, err := s.st.ListRollouts(r.Context())
	if err != nil {
		return err
	}
	online := 0
	for _, d := range ds {
		if d.Online {
			online++
		}
	}
	byStatus := map[store.RolloutStatus]int{}
	for _, ro := range rs {
		byStatus[ro.Status]++
	}
	var b bytes.Buffer
	gauge := func(name, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
	}
	gauge("modelfleet_devices", "Devices known to the hub.")
	fmt.Fprintf(&b, "modelfleet_devices %d\n", len(ds))
	gauge("modelfleet_devices_online", "Devices whose agent is connected to the broker.")
	fmt.Fprintf(&b, "modelfleet_devices_online %d\n", online)
	gauge("modelfleet_rollouts", "Rollouts by status.")
	for _, st := range store.RolloutStatuses {
		fmt.Fprintf(&b, "modelfleet_rollouts{status=%q} %d\n", string(st), byStatus[st])
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, err = w.Write(b.Bytes())
	return err
}
