package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// warmVerifier returns a Verifier that verified raw twice, so the manifest
// envelopes raw embeds are remembered and indexed for grafting.
func warmVerifier(t *testing.T, f *fixture, raw []byte) *Verifier {
	t.Helper()
	v := f.verifier()
	for range 2 {
		if _, err := v.VerifyAssignment(raw); err != nil {
			t.Fatal(err)
		}
	}
	if v.manifests == nil || len(v.manifests.byTree) == 0 {
		t.Fatal("no manifest envelope indexed for grafting after two verifications")
	}
	return v
}

// graftedTrees counts the nodes of the tree of raw, parsed with v's cache,
// that are remembered envelope trees.
func graftedTrees(t *testing.T, v *Verifier, raw []byte) int {
	t.Helper()
	tree, err := parseJSONWith(raw, v.manifests)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var walk func(*node)
	walk = func(x *node) {
		if v.manifests.grafted(x) != nil {
			n++
			return
		}
		for _, e := range x.elems {
			walk(e)
		}
		for _, m := range x.members {
			walk(m.val)
		}
	}
	walk(tree)
	return n
}

// TestManifestCacheSameResult checks that verification with remembered
// manifests — found by digest after the first verification, grafted while
// parsing after the second — returns exactly what a fresh Verifier returns,
// for canonical and for re-formatted assignments.
func TestManifestCacheSameResult(t *testing.T) {
	f := newFixture(t)
	a := f.assignment(5,
		f.signedManifest(f.manifest("vib", "1.0.0")),
		f.signedManifest(f.manifest("temp", "2.0.0")),
	)
	a.Models[0].Bindings = []Binding{{Input: "factory/+/vib", Output: "out/{2}"}}
	canonical := f.signedAssignment(a)
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, canonical, "", "  "); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		raw     []byte
		grafted int
	}{
		{name: "canonical", raw: canonical, grafted: 2},
		{name: "pretty-printed", raw: pretty.Bytes(), grafted: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want, err := f.verifier().VerifyAssignment(tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			v := f.verifier()
			for i := range 4 {
				got, err := v.VerifyAssignment(tt.raw)
				if err != nil {
					t.Fatalf("verification %d: %v", i+1, err)
				}
				if !reflect.DeepEqual(got.Assignment, want.Assignment) || !reflect.DeepEqual(got.Models, want.Models) || !reflect.DeepEqual(got.Checks, want.Checks) {
					t.Fatalf("verification %d differs from a fresh verifier's:\n%+v\n%+v", i+1, got, want)
				}
			}
			if n := graftedTrees(t, v, tt.raw); n != tt.grafted {
				t.Fatalf("%d grafted manifest trees, want %d", n, tt.grafted)
			}
		})
	}
}

// TestManifestCacheTamperedManifest: a remembered manifest does not vouch
// for other bytes. An embedded manifest that differs from the remembered one
// only after the bytes that index it (its signature is unchanged, so the
// start of the envelope is the same) is parsed, and its release signature
// checked and refused.
func TestManifestCacheTamperedManifest(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	v := warmVerifier(t, f, f.signedAssignment(f.assignment(1, m)))

	tampered, err := Canonicalize(editSigned(t, m, func(s map[string]any) {
		s["artifacts"].([]any)[0].(map[string]any)["sha256"] = strings.Repeat("ee", 32)
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tampered[:graftPrefix], m[:graftPrefix]) || bytes.Equal(tampered, m) {
		t.Fatal("the tampered manifest must share the indexed prefix of the remembered one and differ after it")
	}
	raw := f.signedAssignment(f.assignment(2, tampered))
	if n := graftedTrees(t, v, raw); n != 0 {
		t.Fatalf("tampered manifest grafted (%d trees)", n)
	}
	_, err = v.VerifyAssignment(raw)
	wantErr(t, err, ErrBadSignature, "models[0].signatures")

	// The remembered manifest beside the tampered one: the first is
	// grafted, the second still refused.
	raw = f.signedAssignment(f.assignment(3, m, tampered))
	if n := graftedTrees(t, v, raw); n != 1 {
		t.Fatalf("%d grafted trees, want 1", n)
	}
	_, err = v.VerifyAssignment(raw)
	wantErr(t, err, ErrBadSignature, "models[1].signatures")
}

// TestManifestCacheTamperedAssignment: grafting a remembered manifest does
// not weaken the director signature, which covers the embedded manifest's
// bytes as well as the rest.
func TestManifestCacheTamperedAssignment(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	raw := f.signedAssignment(f.assignment(1, m))
	v := warmVerifier(t, f, raw)
	for _, tt := range []struct{ name, old, new string }{
		{name: "sequence", old: `"sequence":1`, new: `"sequence":9`},
		{name: "mode", old: `"mode":"active"`, new: `"mode":"shadow"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := bytes.Replace(raw, []byte(tt.old), []byte(tt.new), 1)
			if bytes.Equal(bad, raw) {
				t.Fatalf("%s not found", tt.old)
			}
			if n := graftedTrees(t, v, bad); n != 1 {
				t.Fatalf("%d grafted trees, want 1", n)
			}
			_, err := v.VerifyAssignment(bad)
			wantErr(t, err, ErrBadSignature, "signatures")
		})
	}
}

// TestManifestCacheCopies: what VerifyAssignment returns for a remembered
// manifest is a copy; changing it changes nothing the Verifier holds.
func TestManifestCacheCopies(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	raw := f.signedAssignment(f.assignment(1, m))
	v := warmVerifier(t, f, raw)
	va, err := v.VerifyAssignment(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(va.Models[0].Entry.Manifest)
	for i := range va.Models[0].Entry.Manifest {
		va.Models[0].Entry.Manifest[i] = ' '
	}
	va.Models[0].Manifest.Artifacts[0].SHA256 = strings.Repeat("ff", 32)
	va.Models[0].Manifest.Inputs[0].Shape[1] = 7
	again, err := v.VerifyAssignment(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Models[0].Entry.Manifest, want) {
		t.Fatal("changing a returned manifest envelope changed the remembered one")
	}
	if got := again.Models[0].Manifest; got.Artifacts[0].SHA256 != strings.Repeat("ab", 32) || got.Inputs[0].Shape[1] != 128 {
		t.Fatalf("changing a returned manifest changed the remembered one: %+v", got)
	}
}

// TestManifestCacheRootRotation: remembered manifests are dropped with the
// root that verified them; a release key revoked by the new root no longer
// vouches for them.
func TestManifestCacheRootRotation(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	raw := f.signedAssignment(f.assignment(1, m))
	v := warmVerifier(t, f, raw)

	next := f.root.Clone()
	next.Version = 2
	next.Keys = map[string]PublicKey{}
	next.Roles.Root = mustRole(t, next, 2, f.rootKeys)
	next.Roles.Release = mustRole(t, next, 1, mustKeys(t, "release-new", 1))
	next.Roles.Director = mustRole(t, next, 1, f.directorKeys)
	if _, err := v.UpdateRoot(mustSign(t, next, signers(f.rootKeys...)...)); err != nil {
		t.Fatal(err)
	}
	if v.manifests != nil {
		t.Fatal("manifest cache kept across a root rotation")
	}
	_, err := v.VerifyAssignment(raw)
	wantErr(t, err, ErrUnknownKey, "models[0].signatures")
}

// TestGraftDepthLimit: a grafted tree counts towards the nesting limit
// exactly as parsing it would.
func TestGraftDepthLimit(t *testing.T) {
	f := newFixture(t)
	m := f.signedManifest(f.manifest("vib", "1.0.0"))
	v := warmVerifier(t, f, f.signedAssignment(f.assignment(1, m)))
	d := depthOf(mustParseJSON(t, m))
	for _, tt := range []struct {
		name    string
		outer   int
		wantErr bool
	}{
		{name: "at the limit", outer: MaxDepth - d, wantErr: false},
		{name: "one level too deep", outer: MaxDepth - d + 1, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := []byte(strings.Repeat("[", tt.outer) + string(m) + strings.Repeat("]", tt.outer))
			plain, errPlain := parseJSON(doc)
			grafted, errGraft := parseJSONWith(doc, v.manifests)
			if (errPlain != nil) != tt.wantErr || (errGraft != nil) != tt.wantErr {
				t.Fatalf("errors: plain %v, with cache %v; want error %v", errPlain, errGraft, tt.wantErr)
			}
			if tt.wantErr {
				if errPlain.Error() != errGraft.Error() || !errors.Is(errGraft, ErrMalformed) {
					t.Fatalf("errors differ: plain %v, with cache %v", errPlain, errGraft)
				}
				return
			}
			if !bytes.Equal(plain.canonical(), grafted.canonical()) {
				t.Fatal("canonical bytes differ")
			}
			if n := graftedTrees(t, v, doc); n != 1 {
				t.Fatalf("%d grafted trees, want 1", n)
			}
		})
	}
}

func mustParseJSON(t *testing.T, raw []byte) *node {
	t.Helper()
	n, err := parseJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCanonicalSourceText: a value whose source text is canonical keeps it
// (and is emitted by copying it), anything else is re-encoded; both give
// the same bytes.
func TestCanonicalSourceText(t *testing.T) {
	tests := []struct {
		in    string
		canon bool
	}{
		{in: `{"a":[1,"x",true,null,{}],"b":{"c":-5}}`, canon: true},
		{in: `[]`, canon: true},
		{in: `{"b":1,"a":2}`, canon: false},
		{in: `{"a":1, "b":2}`, canon: false},
		{in: `[ 1]`, canon: false},
		{in: `{"a":-0}`, canon: false},
		{in: `{"a":"\u0041"}`, canon: false},
		{in: `{"\u0061":1}`, canon: false},
		{in: `[[[["x\"y"]]]]`, canon: false},
		{in: `{"a":{"b":[1,2]},"c":{"e":1,"d":2}}`, canon: false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n := mustParseJSON(t, []byte(tt.in))
			if n.canon != tt.canon {
				t.Fatalf("canon = %v, want %v", n.canon, tt.canon)
			}
			if got, want := string(n.appendCanonical(nil)), string(reencoded(n)); got != want || n.canon && got != tt.in {
				t.Fatalf("canonical %q, re-encoded %q", got, want)
			}
		})
	}
}

// reencoded returns the canonical bytes of n encoded value by value,
// without copying any source text.
func reencoded(n *node) []byte {
	var plain func(*node) *node
	plain = func(x *node) *node {
		c := *x
		c.canon = false
		c.elems = make([]*node, len(x.elems))
		for i, e := range x.elems {
			c.elems[i] = plain(e)
		}
		c.members = make([]member, len(x.members))
		for i, m := range x.members {
			c.members[i] = member{key: m.key, val: plain(m.val)}
		}
		return &c
	}
	return plain(n).appendCanonical(nil)
}

// FuzzGraft checks the two shortcuts of the parser on any input: the
// canonical bytes emitted from canonical source text equal those encoded
// value by value, and parsing with a warm manifest cache gives the same
// result (the same canonical bytes, or the same error) as without.
func FuzzGraft(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	fx := newFixture(f)
	m := fx.signedManifest(fx.manifest("vib", "1.0.0"))
	asg := fx.signedAssignment(fx.assignment(3, m))
	f.Add([]byte(`[{"x":` + string(m) + `},` + string(m) + `]`))
	f.Add(asg)
	v := fx.verifier()
	for range 2 {
		if _, err := v.VerifyAssignment(asg); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		plain, errPlain := parseJSON(data)
		grafted, errGraft := parseJSONWith(data, v.manifests)
		if (errPlain == nil) != (errGraft == nil) || errPlain != nil && errPlain.Error() != errGraft.Error() {
			t.Fatalf("errors differ: plain %v, with cache %v", errPlain, errGraft)
		}
		if errPlain != nil {
			return
		}
		c := plain.appendCanonical(nil)
		if slow := reencoded(plain); !bytes.Equal(c, slow) {
			t.Fatalf("canonical source text %q, re-encoded %q", c, slow)
		}
		if g := grafted.appendCanonical(nil); !bytes.Equal(c, g) {
			t.Fatalf("with cache %q, without %q", g, c)
		}
	})
}
