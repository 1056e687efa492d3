package manifest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of objects and arrays Canonicalize accepts.
// modelfleet documents nest about ten levels; the limit stops stack and
// memory exhaustion by hostile input.
const MaxDepth = 64

// Canonicalize returns the canonical form of the JSON value in raw, the bytes
// that signatures cover:
//
//   - no insignificant whitespace;
//   - object members sorted by key, comparing the UTF-8 bytes (which is
//     Unicode code point order);
//   - strings emitted as UTF-8, escaping only what JSON requires: `"` and `\`
//     as \" and \\, U+0008, U+0009, U+000A, U+000C, U+000D as \b \t \n \f \r,
//     other control characters below U+0020 as \u00XX with lower-case hex.
//     Everything else is literal, including "<", ">", "&", U+007F, U+2028 and
//     U+2029, so "\u00e9" and "é" canonicalise to the same bytes;
//   - integers only, in plain decimal, between -2^63 and 2^64-1; "-0" becomes
//     "0".
//
// It rejects, with an error wrapping ErrMalformed: invalid JSON, invalid
// UTF-8, unpaired UTF-16 surrogate escapes, duplicate object keys (compared
// after unescaping), numbers with a fraction or exponent, integers out of
// range, nesting deeper than MaxDepth and any data after the value.
func Canonicalize(raw []byte) ([]byte, error) {
	n, err := parseJSON(raw)
	if err != nil {
		return nil, err
	}
	return n.appendCanonical(make([]byte, 0, len(raw))), nil
}

type nodeKind uint8

const (
	kindNull nodeKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// node is one parsed JSON value. Object members are kept sorted by key.
//
// Nodes are never changed once parsed: a Verifier shares the trees of
// manifest envelopes it verified between documents (see subtrees).
type node struct {
	kind    nodeKind
	boolean bool
	// canon is true when the source text of the value was already its
	// canonical form. For an array or object, str then holds that text, so
	// that it is emitted with one copy instead of being re-encoded.
	canon   bool
	str     string // string value, the canonical integer literal, or the canonical text of a canon array or object
	elems   []*node
	members []member
	size    int // bytes of the source text of an array or object: at least its canonical size
}

type member struct {
	key string
	val *node
}

// get returns the member value for key, or nil.
func (n *node) get(key string) *node {
	if n == nil || n.kind != kindObject {
		return nil
	}
	i, ok := slices.BinarySearchFunc(n.members, key, func(m member, k string) int {
		return strings.Compare(m.key, k)
	})
	if !ok {
		return nil
	}
	return n.members[i].val
}

// canonical returns the canonical bytes of n.
func (n *node) canonical() []byte { return n.appendCanonical(make([]byte, 0, n.size+2)) }

func (n *node) appendCanonical(b []byte) []byte {
	if n.canon && (n.kind == kindArray || n.kind == kindObject) {
		return append(b, n.str...)
	}
	return n.encodeCanonical(b)
}

// encodeCanonical emits n from its parts; appendCanonical copies the
// source text instead when it was canonical already.
func (n *node) encodeCanonical(b []byte) []byte {
	switch n.kind {
	case kindNull:
		return append(b, "null"...)
	case kindBool:
		if n.boolean {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case kindNumber:
		return append(b, n.str...)
	case kindString:
		return appendString(b, n.str)
	case kindArray:
		b = append(b, '[')
		for i, e := range n.elems {
			if i > 0 {
				b = append(b, ',')
			}
			b = e.appendCanonical(b)
		}
		return append(b, ']')
	default:
		b = append(b, '{')
		for i, m := range n.members {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m.key)
			b = append(b, ':')
			b = m.val.appendCanonical(b)
		}
		return append(b, '}')
	}
}

const hexDigits = "0123456789abcdef"

// appendString emits s quoted, escaping only what RFC 8259 requires. s is
// valid UTF-8: it comes from encoding/json, which never yields anything else.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"':
			b = append(b, '\\', '"')
		case '\\':
			b = append(b, '\\', '\\')
		case '\b':
			b = append(b, '\\', 'b')
		case '\t':
			b = append(b, '\\', 't')
		case '\n':
			b = append(b, '\\', 'n')
		case '\f':
			b = append(b, '\\', 'f')
		case '\r':
			b = append(b, '\\', 'r')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// scanner is a strict RFC 8259 parser building a node tree in one pass.
// encoding/json's Decoder.Token would do, but it re-enters Decode for every
// scalar and allocates an error per value: it made up half of the time of
// verifying an assignment. FuzzCanonicalize checks this scanner against
// encoding/json on every input.
type scanner struct {
	data  []byte
	text  string // data as one string: unescaped strings are substrings of it
	pos   int
	depth int
	// spaces counts the whitespace bytes skipped so far: an array or object
	// during which it did not change has no insignificant whitespace.
	spaces int
	// Nodes, members and elements come from slabs: members and elements
	// are gathered on the scratch stacks, then copied once into a slab. A
	// few large allocations instead of one or two per value.
	slab       []node
	slabSize   int
	members    []member
	elems      []*node
	memberSlab []member
	elemSlab   []*node
	// known, when set, supplies trees of values parsed before (see
	// subtrees).
	known subtrees
}

// subtrees hands the scanner the parsed trees of values it has seen
// before: a Verifier's verified manifest envelopes, which an assignment
// embeds again and again.
type subtrees interface {
	// match returns a tree whose canonical text (its str, the tree being
	// canon) is a prefix of rest, and the tree's nesting depth; or nil.
	// The tree must have been parsed from exactly that text: the scanner
	// then skips the text and uses the tree as if it had parsed it.
	match(rest []byte) (n *node, depth int)
}

func (s *scanner) newNode(k nodeKind) *node {
	if len(s.slab) == 0 {
		// Slabs double from 32 nodes up to 1024: small documents (or
		// mostly grafted ones) allocate little, large ones rarely.
		s.slabSize = min(max(2*s.slabSize, 32), 1024)
		s.slab = make([]node, s.slabSize)
	}
	n := &s.slab[0]
	s.slab = s.slab[1:]
	n.kind = k
	return n
}

// keepMembers copies ms into the member slab. The result's capacity ends
// at its length, so appending to it never overwrites a neighbour.
func (s *scanner) keepMembers(ms []member) []member {
	if len(ms) > cap(s.memberSlab)-len(s.memberSlab) {
		s.memberSlab = make([]member, 0, max(len(ms), s.slabSize))
	}
	i := len(s.memberSlab)
	s.memberSlab = append(s.memberSlab, ms...)
	return s.memberSlab[i:len(s.memberSlab):len(s.memberSlab)]
}

// keepElems is keepMembers for array elements.
func (s *scanner) keepElems(es []*node) []*node {
	if len(es) > cap(s.elemSlab)-len(s.elemSlab) {
		s.elemSlab = make([]*node, 0, max(len(es), s.slabSize))
	}
	i := len(s.elemSlab)
	s.elemSlab = append(s.elemSlab, es...)
	return s.elemSlab[i:len(s.elemSlab):len(s.elemSlab)]
}

func parseJSON(raw []byte) (*node, error) { return parseJSONWith(raw, nil) }

// parseJSONWith parses raw, taking the trees of values known supplies
// instead of parsing them again. The result is the same as parseJSON's.
func parseJSONWith(raw []byte, known subtrees) (*node, error) {
	if !utf8.Valid(raw) {
		return nil, malformed("document is not valid UTF-8")
	}
	s := &scanner{data: raw, text: string(raw), known: known}
	s.skipSpace()
	n, err := s.value()
	if err != nil {
		return nil, err
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return nil, s.syntax("unexpected data after the JSON value")
	}
	return n, nil
}

// syntax reports invalid JSON; the other errors are stricter rules on
// valid JSON.
func (s *scanner) syntax(msg string) error {
	return &formatError{err: ErrMalformed, msg: "invalid JSON at byte " + strconv.Itoa(s.pos) + ": " + msg, syntax: true}
}

func (s *scanner) skipSpace() {
	start := s.pos
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			s.spaces += s.pos - start
			return
		}
	}
	s.spaces += s.pos - start
}

func (s *scanner) value() (*node, error) {
	if s.pos >= len(s.data) {
		return nil, s.syntax("unexpected end of input")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		if s.known != nil {
			if n, d := s.known.match(s.data[s.pos:]); n != nil && s.depth+d <= MaxDepth {
				s.pos += len(n.str)
				return n, nil
			}
		}
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		str, canon, err := s.string()
		if err != nil {
			return nil, err
		}
		n := s.newNode(kindString)
		n.str = str
		n.canon = canon
		return n, nil
	case c == 't':
		n := s.newNode(kindBool)
		n.boolean = true
		return s.literal("true", n)
	case c == 'f':
		return s.literal("false", s.newNode(kindBool))
	case c == 'n':
		return s.literal("null", s.newNode(kindNull))
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	default:
		return nil, s.syntax(fmt.Sprintf("unexpected character %q", c))
	}
}

func (s *scanner) literal(lit string, n *node) (*node, error) {
	if !strings.HasPrefix(s.text[s.pos:], lit) {
		return nil, s.syntax("invalid literal")
	}
	s.pos += len(lit)
	n.canon = true
	return n, nil
}

func (s *scanner) enter() error {
	s.depth++
	if s.depth > MaxDepth {
		return malformed(fmt.Sprintf("nesting deeper than %d levels", MaxDepth))
	}
	s.pos++
	s.skipSpace()
	return nil
}

// leave finishes an array or object that started at start: its size and,
// when canon, its canonical text.
func (s *scanner) leave(n *node, start, spaces int, canon bool) {
	s.depth--
	n.size = s.pos - start
	if canon && s.spaces == spaces {
		n.canon = true
		n.str = s.text[start:s.pos]
	}
}

func (s *scanner) array() (*node, error) {
	start, spaces := s.pos, s.spaces
	if err := s.enter(); err != nil {
		return nil, err
	}
	n := s.newNode(kindArray)
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		s.leave(n, start, spaces, true)
		return n, nil
	}
	base := len(s.elems)
	canon := true
	for {
		s.skipSpace()
		e, err := s.value()
		if err != nil {
			return nil, err
		}
		canon = canon && e.canon
		s.elems = append(s.elems, e)
		s.skipSpace()
		if s.pos >= len(s.data) {
			return nil, s.syntax("unexpected end of input in array")
		}
		c := s.data[s.pos]
		s.pos++
		if c == ']' {
			n.elems = s.keepElems(s.elems[base:])
			s.elems = s.elems[:base]
			s.leave(n, start, spaces, canon)
			return n, nil
		}
		if c != ',' {
			return nil, s.syntax("expected , or ] in array")
		}
	}
}

func (s *scanner) object() (*node, error) {
	start, spaces := s.pos, s.spaces
	if err := s.enter(); err != nil {
		return nil, err
	}
	n := s.newNode(kindObject)
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		s.leave(n, start, spaces, true)
		return n, nil
	}
	base := len(s.members)
	canon := true
	for {
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return nil, s.syntax("expected a string object key")
		}
		key, keyCanon, err := s.string()
		if err != nil {
			return nil, err
		}
		s.skipSpace()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return nil, s.syntax("expected : after object key")
		}
		s.pos++
		s.skipSpace()
		val, err := s.value()
		if err != nil {
			return nil, err
		}
		canon = canon && keyCanon && val.canon
		s.members = append(s.members, member{key: key, val: val})
		s.skipSpace()
		if s.pos >= len(s.data) {
			return nil, s.syntax("unexpected end of input in object")
		}
		c := s.data[s.pos]
		s.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			return nil, s.syntax("expected , or } in object")
		}
	}
	n.members = s.keepMembers(s.members[base:])
	s.members = s.members[:base]
	// Members in strictly increasing order (the canonical order) need
	// neither sorting nor a duplicate check.
	sorted := true
	for i := 1; i < len(n.members); i++ {
		if n.members[i-1].key >= n.members[i].key {
			sorted = false
			break
		}
	}
	if !sorted {
		slices.SortFunc(n.members, func(a, b member) int { return strings.Compare(a.key, b.key) })
		for i := 1; i < len(n.members); i++ {
			if n.members[i].key == n.members[i-1].key {
				return nil, malformed(fmt.Sprintf("duplicate object key %q", n.members[i].key))
			}
		}
	}
	s.leave(n, start, spaces, canon && sorted)
	return n, nil
}

// string reads a string literal at s.pos (the opening quote). The input is
// known to be valid UTF-8, so only escapes need decoding. canon reports
// that the literal had no escape, so that it is its own canonical form
// (an escaped string may be too, but is re-encoded to be sure).
func (s *scanner) string() (str string, canon bool, err error) {
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		if c == '"' {
			str := s.text[start:s.pos]
			s.pos++
			return str, true, nil
		}
		if c == '\\' {
			str, err := s.escapedString(start)
			return str, false, err
		}
		if c < 0x20 {
			return "", false, s.syntax("control character in string")
		}
		s.pos++
	}
	return "", false, s.syntax("unterminated string")
}

func (s *scanner) escapedString(start int) (string, error) {
	b := make([]byte, 0, s.pos-start+16)
	b = append(b, s.data[start:s.pos]...)
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return string(b), nil
		case c < 0x20:
			return "", s.syntax("control character in string")
		case c != '\\':
			b = append(b, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.data) {
			break
		}
		e := s.data[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(s.data[s.pos:])
			if !ok {
				return "", s.syntax("bad \\u escape")
			}
			s.pos += 4
			switch {
			case r >= 0xdc00 && r <= 0xdfff:
				return "", malformed("string holds an unpaired UTF-16 low surrogate escape")
			case r >= 0xd800 && r <= 0xdbff:
				rest := s.data[s.pos:]
				if len(rest) < 6 || rest[0] != '\\' || rest[1] != 'u' {
					return "", malformed("string holds an unpaired UTF-16 high surrogate escape")
				}
				lo, ok := hex4(rest[2:])
				if !ok {
					return "", s.syntax("bad \\u escape")
				}
				if lo < 0xdc00 || lo > 0xdfff {
					return "", malformed("string holds an unpaired UTF-16 high surrogate escape")
				}
				s.pos += 6
				r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", s.syntax(fmt.Sprintf("invalid escape \\%c", e))
		}
	}
	return "", s.syntax("unterminated string")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// number reads a number per the RFC 8259 grammar and keeps it only when it
// is an integer in range.
func (s *scanner) number() (*node, error) {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.pos < len(s.data) && s.data[s.pos] == '0' {
		s.pos++
	} else if digits() == 0 {
		return nil, s.syntax("number without digits")
	}
	integer := true
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		integer = false
		if digits() == 0 {
			return nil, s.syntax("number without digits after the decimal point")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		integer = false
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if digits() == 0 {
			return nil, s.syntax("number without exponent digits")
		}
	}
	lit := s.text[start:s.pos]
	if !integer {
		return nil, malformed(fmt.Sprintf("number %s is not an integer: signed documents carry integers only", lit))
	}
	canon, err := canonicalInteger(lit)
	if err != nil {
		return nil, err
	}
	n := s.newNode(kindNumber)
	n.str = canon
	n.canon = canon == lit
	return n, nil
}

// canonicalInteger checks that lit (a JSON number literal) is an integer in
// range and returns its canonical spelling.
func canonicalInteger(lit string) (string, error) {
	if lit == "-0" {
		return "0", nil
	}
	var err error
	if strings.HasPrefix(lit, "-") {
		_, err = strconv.ParseInt(lit, 10, 64)
	} else {
		_, err = strconv.ParseUint(lit, 10, 64)
	}
	if err != nil {
		return "", malformed(fmt.Sprintf("integer %s out of range (-2^63 to 2^64-1)", lit))
	}
	return lit, nil
}
