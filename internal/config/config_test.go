package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

type sample struct {
	Name   string            `yaml:"name" usage:"the name"`
	Labels map[string]string `yaml:"labels"`
	Net    struct {
		Brokers []string `yaml:"brokers"`
		Port    int      `yaml:"port"`
		TLS     bool     `yaml:"tls"`
	} `yaml:"net"`
	Secret string `yaml:"secret"`
	Hidden string `yaml:"-"`
}

func TestFieldsNames(t *testing.T) {
	var s sample
	var got []string
	for _, f := range Fields(&s) {
		got = append(got, f.Key+" "+f.Env+" --"+f.Flag)
	}
	want := []string{
		"name MODELFLEET_NAME --name",
		"labels MODELFLEET_LABELS --labels",
		"net.brokers MODELFLEET_NET_BROKERS --net-brokers",
		"net.port MODELFLEET_NET_PORT --net-port",
		"net.tls MODELFLEET_NET_TLS --net-tls",
		"secret MODELFLEET_SECRET --secret",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Fields:\n got %q\nwant %q", got, want)
	}
}

func TestLoadPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yml := "name: from-file\nnet:\n  port: 1\n  brokers: [a, b]\nlabels: {site: x}\n"
	if err := os.WriteFile(path, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := sample{Name: "default"}
	s.Net.TLS = true
	env := map[string]string{"MODELFLEET_NET_PORT": "2", "MODELFLEET_NAME": "from-env"}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	BindFlags(fs, &s)
	if err := fs.Parse([]string{"--name", "from-flag", "--labels", "site=plant-a, line=1"}); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := Load(&s, path, false, lookup, fs); err != nil {
		t.Fatal(err)
	}
	if s.Name != "from-flag" || s.Net.Port != 2 || !s.Net.TLS || !reflect.DeepEqual(s.Net.Brokers, []string{"a", "b"}) ||
		!reflect.DeepEqual(s.Labels, map[string]string{"site": "plant-a", "line": "1"}) {
		t.Fatalf("got %+v", s)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		env        map[string]string
		wantErr    []string
	}{
		{name: "unknown field", yaml: "nmae: x\n", wantErr: []string{"nmae"}},
		{name: "bad type", yaml: "net:\n  port: many\n", wantErr: []string{"many"}},
		{name: "bad env values all reported", env: map[string]string{"MODELFLEET_NET_PORT": "x", "MODELFLEET_NET_TLS": "maybe"},
			wantErr: []string{"MODELFLEET_NET_PORT", "MODELFLEET_NET_TLS"}},
		{name: "bad labels", env: map[string]string{"MODELFLEET_LABELS": "novalue"}, wantErr: []string{"labels", "key=value"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var s sample
			err := Load(&s, path, false, func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, nil)
			if err == nil {
				t.Fatal("Load succeeded, want error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	var s sample
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if err := Load(&s, missing, true, nil, nil); err != nil {
		t.Fatalf("optional missing file: %v", err)
	}
	if err := Load(&s, missing, false, nil, nil); err == nil {
		t.Fatal("required missing file: no error")
	}
}

func TestDumpMasksSecrets(t *testing.T) {
	s := sample{Name: "n", Secret: "hunter2"}
	out := strings.Join(Dump(&s, "secret"), "\n")
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "secret = ********") {
		t.Fatalf("Dump leaked or lost the secret:\n%s", out)
	}
}
