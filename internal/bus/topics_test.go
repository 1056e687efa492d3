package bus

import (
	"errors"
	"testing"
)

func TestTopics(t *testing.T) {
	tp := NewTopics("")
	tests := []struct{ name, got, want string }{
		{"root", tp.Root(), "modelfleet/v1/root"},
		{"assignment", tp.Assignment("dev-1"), "modelfleet/v1/devices/dev-1/assignment"},
		{"state", tp.State("dev-1"), "modelfleet/v1/devices/dev-1/state"},
		{"online", tp.Online("dev-1"), "modelfleet/v1/devices/dev-1/online"},
		{"telemetry", tp.Telemetry("dev-1"), "modelfleet/v1/devices/dev-1/telemetry"},
		{"events", tp.Events("dev-1"), "modelfleet/v1/devices/dev-1/events"},
		{"infer", tp.Infer("dev-1", "m"), "modelfleet/v1/devices/dev-1/infer/m"},
		{"all", tp.AllDevices(KindState), "modelfleet/v1/devices/+/state"},
		{"custom prefix", NewTopics("/acme/fleet/").Root(), "acme/fleet/root"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

func TestParseDevice(t *testing.T) {
	tp := NewTopics("p")
	tests := []struct {
		topic               string
		device, kind, model string
		ok                  bool
	}{
		{"p/devices/d1/state", "d1", KindState, "", true},
		{"p/devices/d1/infer/m", "d1", KindInfer, "m", true},
		{"p/devices/d1/infer", "", "", "", false},
		{"p/devices//state", "", "", "", false},
		{"q/devices/d1/state", "", "", "", false},
		{"p/devices/d1/state/extra", "", "", "", false},
		{"p/root", "", "", "", false},
	}
	for _, tt := range tests {
		d, k, m, ok := tp.ParseDevice(tt.topic)
		if d != tt.device || k != tt.kind || m != tt.model || ok != tt.ok {
			t.Errorf("ParseDevice(%q) = %q %q %q %v, want %q %q %q %v", tt.topic, d, k, m, ok, tt.device, tt.kind, tt.model, tt.ok)
		}
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr bool
	}{
		{"plant-a.line_1", false},
		{"", true},
		{"a/b", true},
		{"a+b", true},
		{"a#", true},
		{"..", true},
		{"é", true},
		{string(make([]byte, 129)), true},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrBadName)) {
			t.Errorf("ValidateName(%q) = %v, wantErr %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tcp://broker:1883", "broker:1883"},
		{"tcp://broker", "broker:1883"},
		{"ssl://broker", "broker:8883"},
		{"mqtts://10.0.0.1", "10.0.0.1:8883"},
		{"ws://broker", "broker:80"},
		{"wss://broker", "broker:443"},
		{"ssl://[::1]", "[::1]:8883"},
		{"tls://broker:9000", "broker:9000"},
	} {
		got, err := HostPort(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("HostPort(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "tcp://", "::"} {
		if _, err := HostPort(bad); err == nil {
			t.Errorf("HostPort(%q): no error", bad)
		}
	}
}
