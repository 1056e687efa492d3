package manifest

import "slices"

// maxManifestCache is how many manifest envelopes a Verifier remembers;
// when full, it forgets them all and starts again.
const maxManifestCache = 1024

// graftPrefix is how many leading bytes of a canonical manifest envelope
// index it for grafting: past the first key ID into the first signature, so
// different manifests rarely share a bucket.
const graftPrefix = 128

// manifestCache remembers manifest envelopes whose release signatures and
// format checked out under the Verifier's current root, because the hub
// re-signs assignments often and they repeat the same manifests. It finds
// them two ways:
//
//   - by the sha256 of their canonical bytes, once an assignment was parsed
//     and the embedded envelope canonicalised (whatever its formatting);
//   - while an assignment is parsed, when the bytes at the scanner's
//     position are exactly the canonical text of a remembered envelope (the
//     hub sends canonical JSON): the scanner then takes the tree parsed from
//     those bytes before instead of parsing them again (grafting, see
//     subtrees). The tree is the one parsing the same bytes builds, so the
//     assignment's canonical bytes, which its signature covers, are the
//     same; grafting only saves the work. An envelope is indexed for
//     grafting the second time it is seen, so that assignments whose
//     manifests are all new pay nothing for it.
//
// Nothing the cache holds is handed out: callers get copies. The Verifier's
// mutex guards it; UpdateRoot drops it.
type manifestCache struct {
	byDigest map[[32]byte]*cachedManifest
	byPrefix map[string][]*cachedManifest
	byTree   map[*node]*cachedManifest
}

// cachedManifest is one verified manifest envelope.
type cachedManifest struct {
	// env holds the canonical envelope bytes (env.raw, the cache's own
	// copy), Schema and Type; once grafting is set up it is the envelope
	// parsed from env.raw, whose tree is tree.
	env *Envelope
	// tree is the parsed envelope (canon: tree.str is env.raw as a
	// string) and depth its nesting depth; nil until seen a second time.
	tree  *node
	depth int
	// m is the decoded, validated manifest, handed out as clones only.
	m *ModelManifest
	// digest is the hex sha256 of the signed bytes.
	digest string
}

// lookup returns the entry for canonical envelope bytes whose sha256 is
// key, or nil. The entry is indexed for grafting from now on. A nil cache
// is empty.
func (c *manifestCache) lookup(key [32]byte) *cachedManifest {
	if c == nil {
		return nil
	}
	e := c.byDigest[key]
	if e != nil && e.tree == nil {
		c.graft(e)
	}
	return e
}

// grafted returns the entry whose tree n is, or nil when n was parsed
// from the document.
func (c *manifestCache) grafted(n *node) *cachedManifest {
	if c == nil {
		return nil
	}
	return c.byTree[n]
}

// envelopeStart is how every canonical envelope begins.
const envelopeStart = `{"signatures":[`

// match implements subtrees.
func (c *manifestCache) match(rest []byte) (*node, int) {
	if len(rest) < graftPrefix || string(rest[:len(envelopeStart)]) != envelopeStart {
		return nil, 0
	}
	for _, e := range c.byPrefix[string(rest[:graftPrefix])] {
		// A JSON text is never a proper prefix of another one, so at most
		// one entry matches.
		if len(rest) >= len(e.tree.str) && string(rest[:len(e.tree.str)]) == e.tree.str {
			return e.tree, e.depth
		}
	}
	return nil, 0
}

// add remembers the envelope env, whose canonical bytes have the sha256
// key and whose release signatures verified, with its decoded, validated
// manifest m (which the cache keeps: pass a copy) and the hex sha256 of its
// signed bytes. It returns the cache to use from now on: c itself, or a new
// one when c was nil or full.
func (c *manifestCache) add(key [32]byte, env *Envelope, m *ModelManifest, digest string) *manifestCache {
	if c == nil || len(c.byDigest) >= maxManifestCache {
		c = &manifestCache{
			byDigest: map[[32]byte]*cachedManifest{},
			byPrefix: map[string][]*cachedManifest{},
			byTree:   map[*node]*cachedManifest{},
		}
	}
	if c.byDigest[key] == nil {
		own := &Envelope{raw: slices.Clone(env.raw), Schema: env.Schema, Type: env.Type}
		c.byDigest[key] = &cachedManifest{env: own, m: m, digest: digest}
	}
	return c
}

// graft parses e's canonical bytes into a tree of the cache's own (the
// tree of the document e came in holds strings of the whole document) and
// indexes it for grafting.
func (c *manifestCache) graft(e *cachedManifest) {
	tree, err := parseJSON(e.env.raw)
	if err != nil {
		return // cannot happen: the bytes were parsed before
	}
	env, err := envelopeFromNode(tree)
	// Graft only a tree whose text is exactly the canonical envelope; it
	// always is, the bytes being canonical, but grafting relies on it.
	if err != nil || !tree.canon || tree.str != string(e.env.raw) || len(tree.str) < graftPrefix {
		return
	}
	e.env, e.tree, e.depth = env, tree, depthOf(tree)
	p := tree.str[:graftPrefix]
	c.byPrefix[p] = append(c.byPrefix[p], e)
	c.byTree[tree] = e
}

// depthOf returns the nesting depth of n: 0 for a scalar, 1 for an array or
// object of scalars, and so on, as the scanner counts it.
func depthOf(n *node) int {
	d := 0
	switch n.kind {
	case kindArray:
		for _, e := range n.elems {
			d = max(d, depthOf(e))
		}
		return d + 1
	case kindObject:
		for _, m := range n.members {
			d = max(d, depthOf(m.val))
		}
		return d + 1
	}
	return 0
}
