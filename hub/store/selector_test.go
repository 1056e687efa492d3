package store

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Selector
		wantErr string // substring of the error; "" for none
	}{
		{name: "empty", in: "", want: Selector{}},
		{name: "only spaces", in: "   ", want: Selector{}},
		{name: "one pair", in: "site=plant-a", want: Selector{"site": "plant-a"}},
		{name: "two pairs", in: "site=plant-a,line=1", want: Selector{"site": "plant-a", "line": "1"}},
		{name: "spaces trimmed", in: " site = plant-a ,  line=1 ", want: Selector{"site": "plant-a", "line": "1"}},
		{name: "inner spaces kept", in: "room=hall 2", want: Selector{"room": "hall 2"}},
		{name: "punctuation", in: "example.com/tier=gold:1", want: Selector{"example.com/tier": "gold:1"}},
		{name: "unicode", in: "usine=Lyon-é", want: Selector{"usine": "Lyon-é"}},
		{name: "no equals", in: "site", wantErr: `pair "site" has no '='`},
		{name: "empty key", in: "=plant-a", wantErr: "label key is empty"},
		{name: "empty value", in: "site=", wantErr: `label value of "site" is empty`},
		{name: "second equals", in: "site=a=b", wantErr: "contains '=' or ','"},
		{name: "trailing comma", in: "site=a,", wantErr: "pair 2 is empty"},
		{name: "double comma", in: "site=a,,line=1", wantErr: "pair 2 is empty"},
		{name: "leading comma", in: ",site=a", wantErr: "pair 1 is empty"},
		{name: "key twice", in: "site=a,site=b", wantErr: `key "site" given twice`},
		{name: "control character", in: "site=a\tb", wantErr: "control or invalid character"},
		{name: "invalid UTF-8", in: "site=\xff", wantErr: "control or invalid character"},
		{name: "too long", in: "site=" + strings.Repeat("x", MaxLabelBytes+1), wantErr: "longer than 256 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParseSelector(%q) = %v, %v; want an ErrInvalid containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSelector(%q): %v", tt.in, err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("ParseSelector(%q) = %v, want %v", tt.in, got, tt.want)
			}
			// The canonical form parses back to the same selector.
			again, err := ParseSelector(got.String())
			if err != nil || !maps.Equal(again, got) {
				t.Errorf("ParseSelector(%q.String() = %q) = %v, %v", tt.in, got.String(), again, err)
			}
		})
	}
}

func TestSelectorString(t *testing.T) {
	s := Selector{"site": "plant-a", "line": "1", "gpu": "true"}
	if got, want := s.String(), "gpu=true,line=1,site=plant-a"; got != want {
		t.Errorf("String() = %q, want %q (sorted by key)", got, want)
	}
	if got := (Selector{}).String(); got != "" {
		t.Errorf("empty String() = %q", got)
	}
}

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"site": "plant-a", "line": "1"}
	tests := []struct {
		name string
		sel  Selector
		want bool
	}{
		{"empty matches all", nil, true},
		{"one pair", Selector{"site": "plant-a"}, true},
		{"all pairs", Selector{"site": "plant-a", "line": "1"}, true},
		{"wrong value", Selector{"site": "plant-b"}, false},
		{"missing key", Selector{"gpu": "true"}, false},
		{"one of two wrong", Selector{"site": "plant-a", "line": "2"}, false},
		{"case-sensitive", Selector{"site": "Plant-A"}, false},
	}
	for _, tt := range tests {
		if got := tt.sel.Matches(labels); got != tt.want {
			t.Errorf("%s: %v.Matches(%v) = %t, want %t", tt.name, tt.sel, labels, got, tt.want)
		}
	}
	if (Selector{"site": "plant-a"}).Matches(nil) {
		t.Error("a selector matched a device without labels")
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"", "site=plant-a", "a=1,b=2", " a = 1 ", "a=", "=a", "a=b=c", ",", "a=1,a=2", "a=\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := ParseSelector(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := sel.Validate(); err != nil {
			t.Fatalf("parsed selector %v does not validate: %v", sel, err)
		}
		again, err := ParseSelector(sel.String())
		if err != nil || !maps.Equal(again, sel) {
			t.Fatalf("round trip of %q: %v, %v", sel.String(), again, err)
		}
		if !sel.Matches(map[string]string(sel)) {
			t.Fatalf("%v does not match its own labels", sel)
		}
	})
}
