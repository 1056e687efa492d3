package serve

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file checks MQTT topic names, filters and the output topic templates
// of bindings (MQTT 3.1.1 §4.7), and keeps the agent's outputs off the
// hub's topics.

// maxTopicBytes is the MQTT limit on a topic's length.
const maxTopicBytes = 65535

// checkTopicName checks a topic the agent publishes to: not empty, valid
// UTF-8 without NUL (a broker disconnects a client that sends one), no
// wildcards, not a broker system topic ($SYS/…).
func checkTopicName(topic string) error {
	switch {
	case topic == "":
		return fmt.Errorf("topic is empty")
	case len(topic) > maxTopicBytes:
		return fmt.Errorf("topic is longer than %d bytes", maxTopicBytes)
	case !utf8.ValidString(topic) || strings.ContainsRune(topic, 0):
		return fmt.Errorf("topic %q is not valid UTF-8 or contains NUL", topic)
	case strings.ContainsAny(topic, "+#"):
		return fmt.Errorf("topic %q contains a wildcard (+ or #); replies and results go to one topic", topic)
	case strings.HasPrefix(topic, "$"):
		return fmt.Errorf("topic %q is a broker system topic (starts with $)", topic)
	}
	return nil
}

// checkFilter checks a subscription filter: wildcards fill whole levels,
// # only as the last.
func checkFilter(filter string) error {
	switch {
	case filter == "":
		return fmt.Errorf("topic filter is empty")
	case len(filter) > maxTopicBytes:
		return fmt.Errorf("topic filter is longer than %d bytes", maxTopicBytes)
	case !utf8.ValidString(filter) || strings.ContainsRune(filter, 0):
		return fmt.Errorf("topic filter %q is not valid UTF-8 or contains NUL", filter)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) != 1 {
			return fmt.Errorf("topic filter %q: a wildcard (+ or #) must fill a whole level", filter)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("topic filter %q: # must be the last level", filter)
		}
	}
	return nil
}

// underPrefix reports whether topic is prefix or below it.
func underPrefix(topic, prefix string) bool {
	return topic == prefix || strings.HasPrefix(topic, prefix+"/")
}

// filtersOverlap reports whether some topic matches both filters, given as
// levels. It ignores the rule that wildcards at the first level do not
// match $ topics, which only makes it more cautious.
func filtersOverlap(a, b []string) bool {
	for i := 0; ; i++ {
		if (i < len(a) && a[i] == "#") || (i < len(b) && b[i] == "#") {
			return true
		}
		if i == len(a) || i == len(b) {
			return len(a) == len(b)
		}
		if a[i] != "+" && b[i] != "+" && a[i] != b[i] {
			return false
		}
	}
}

// template is an output topic with {N} placeholders, each replaced by
// level N (1-based) of the topic the input arrived on — the convention of
// manifest.Binding: "factory/line1/vibration/+" with output
// "factory/line1/anomaly/{4}" sends the result of a message on
// factory/line1/vibration/s7 to factory/line1/anomaly/s7.
type template struct {
	text  string
	parts []templatePart
	max   int // highest level referred to, 0 for none
}

// templatePart is a literal (level 0) or a placeholder for a level.
type templatePart struct {
	literal string
	level   int
}

// maxPlaceholder is the highest level a placeholder may name, as in
// manifest.Binding.
const maxPlaceholder = 99

// parseTemplate parses an output topic template.
func parseTemplate(text string) (template, error) {
	t := template{text: text}
	if err := checkTopicName(strings.NewReplacer("{", "", "}", "").Replace(text)); err != nil {
		return t, err
	}
	rest := text
	for rest != "" {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if rest[i] == '}' {
			return t, fmt.Errorf("topic %q has a } without {", text)
		}
		if i > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("topic %q has a { without }", text)
		}
		num := rest[i+1 : i+j]
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || n > maxPlaceholder || num[0] == '0' || num[0] == '+' {
			return t, fmt.Errorf("topic %q: placeholder {%s} must be a level number, {1} to {%d}", text, num, maxPlaceholder)
		}
		t.parts = append(t.parts, templatePart{level: n})
		t.max = max(t.max, n)
		rest = rest[i+j+1:]
	}
	return t, nil
}

// asFilter returns the levels of a filter that matches every topic the
// template can produce: a level with a placeholder becomes +.
func (t template) asFilter() []string {
	var b strings.Builder
	for _, p := range t.parts {
		if p.level > 0 {
			b.WriteString("\x00") // marks the level as variable
		} else {
			b.WriteString(p.literal)
		}
	}
	levels := strings.Split(b.String(), "/")
	for i, l := range levels {
		if strings.ContainsRune(l, 0) {
			levels[i] = "+"
		}
	}
	return levels
}

// render fills the placeholders from the levels of the input topic.
func (t template) render(levels []string) (string, error) {
	if t.max > len(levels) {
		return "", fmt.Errorf("topic template %q refers to level {%d}, the input topic has %d levels", t.text, t.max, len(levels))
	}
	if t.max == 0 {
		return t.text, nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.level > 0 {
			b.WriteString(levels[p.level-1])
		} else {
			b.WriteString(p.literal)
		}
	}
	return b.String(), nil
}
