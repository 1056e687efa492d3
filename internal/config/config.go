// Package config loads a binary's configuration from, in increasing order of
// precedence: the defaults in the struct, a YAML file, MODELFLEET_* environment
// variables, and command-line flags. Every leaf field of the struct gets a
// key derived from its yaml tags ("s3.endpoint"), an environment variable
// (MODELFLEET_S3_ENDPOINT) and a flag (--s3-endpoint), so the three ways of
// setting a value can never drift apart. YAML decoding is strict: an unknown
// field is an error naming it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable read by this package.
const EnvPrefix = "MODELFLEET_"

// Field is one settable leaf of a configuration struct.
type Field struct {
	// Key is the dotted YAML path, e.g. "mqtt.brokers".
	Key string
	// Env is the environment variable, e.g. MODELFLEET_MQTT_BROKERS.
	Env string
	// Flag is the command-line flag name without dashes, e.g. mqtt-brokers.
	Flag string
	// Usage is the `usage:"…"` tag of the field.
	Usage string
	v     reflect.Value
}

// Fields lists the leaves of the struct pointed to by cfg, in declaration
// order. Fields tagged yaml:"-" are skipped; nested structs are descended
// into. Leaf kinds: string, bool, ints, uints, floats, []string
// (comma-separated outside YAML) and map[string]string (k=v,k=v); fields
// of other kinds (lists of structures) can only be set in YAML.
func Fields(cfg any) []Field {
	var out []Field
	walk(reflect.ValueOf(cfg).Elem(), "", &out)
	return out
}

func walk(v reflect.Value, prefix string, out *[]Field) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		key := name
		if prefix != "" {
			key = prefix + "." + name
		}
		fv := v.Field(i)
		if sf.Type.Kind() == reflect.Struct {
			walk(fv, key, out)
			continue
		}
		if !settable(sf.Type) {
			continue // YAML only: lists of structures and the like
		}
		flat := strings.NewReplacer(".", "_", "-", "_").Replace(key)
		*out = append(*out, Field{
			Key:   key,
			Env:   EnvPrefix + strings.ToUpper(flat),
			Flag:  strings.ReplaceAll(flat, "_", "-"),
			Usage: sf.Tag.Get("usage"),
			v:     fv,
		})
	}
}

// settable reports whether a field of type t can be set from one string.
func settable(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	case reflect.Slice:
		return t.Elem().Kind() == reflect.String
	case reflect.Map:
		return t.Key().Kind() == reflect.String && t.Elem().Kind() == reflect.String
	}
	return false
}

// Set parses s into the field.
func (f Field) Set(s string) error {
	v := f.v
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a boolean", f.Key, s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", f.Key, s)
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s: %q is not a non-negative integer", f.Key, s)
		}
		v.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", f.Key, s)
		}
		v.SetFloat(n)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("%s: unsupported list type %s", f.Key, v.Type())
		}
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		v.Set(reflect.ValueOf(items))
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String || v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("%s: unsupported map type %s", f.Key, v.Type())
		}
		m, err := ParseLabels(s)
		if err != nil {
			return fmt.Errorf("%s: %w", f.Key, err)
		}
		v.Set(reflect.ValueOf(m))
	default:
		return fmt.Errorf("%s: unsupported type %s", f.Key, v.Type())
	}
	return nil
}

// String renders the field's current value in the form Set accepts.
func (f Field) String() string {
	v := f.v
	switch v.Kind() {
	case reflect.Slice:
		return strings.Join(v.Interface().([]string), ",")
	case reflect.Map:
		m := v.Interface().(map[string]string)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + m[k]
		}
		return strings.Join(parts, ",")
	}
	return fmt.Sprint(v.Interface())
}

// ParseLabels parses "k=v,k2=v2" into a map.
func ParseLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m, nil
}

// BindFlags registers a string flag for every field of cfg on fs; Load
// applies the ones set on the command line.
func BindFlags(fs *pflag.FlagSet, cfg any) {
	for _, f := range Fields(cfg) {
		usage := f.Usage
		if usage == "" {
			usage = "config " + f.Key
		}
		if def := f.String(); def != "" && def != "0" && def != "false" {
			usage += " (default " + def + ")"
		}
		fs.String(f.Flag, "", fmt.Sprintf("%s (env %s)", usage, f.Env))
	}
}

// Load fills cfg, which already holds the defaults: from the YAML file at
// path (skipped when path is "" or, with optional, missing), then from the
// environment (lookup, usually os.LookupEnv), then from the flags of fs
// that were set on the command line (fs may be nil). It returns every error
// found, each naming the field.
func Load(cfg any, path string, optional bool, lookup func(string) (string, bool), fs *pflag.FlagSet) error {
	if path != "" {
		b, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist) && optional:
		case err != nil:
			return fmt.Errorf("config file: %w", err)
		default:
			if err := DecodeYAML(bytes.NewReader(b), cfg); err != nil {
				return fmt.Errorf("config file %s: %w", path, err)
			}
		}
	}
	var errs []error
	for _, f := range Fields(cfg) {
		if lookup != nil {
			if s, ok := lookup(f.Env); ok {
				if err := f.Set(s); err != nil {
					errs = append(errs, fmt.Errorf("env %s: %w", f.Env, err))
				}
			}
		}
		if fs != nil {
			if fl := fs.Lookup(f.Flag); fl != nil && fl.Changed {
				if err := f.Set(fl.Value.String()); err != nil {
					errs = append(errs, fmt.Errorf("flag --%s: %w", f.Flag, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// DecodeYAML strictly decodes one YAML document into cfg: unknown fields are
// errors that name the field and line.
func DecodeYAML(r io.Reader, cfg any) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Dump renders cfg as "key = value" lines for `config show`; fields whose
// key is in secret are masked when set.
func Dump(cfg any, secret ...string) []string {
	hide := map[string]bool{}
	for _, s := range secret {
		hide[s] = true
	}
	var lines []string
	for _, f := range Fields(cfg) {
		val := f.String()
		if hide[f.Key] && val != "" {
			val = "********"
		}
		lines = append(lines, f.Key+" = "+val)
	}
	return lines
}
