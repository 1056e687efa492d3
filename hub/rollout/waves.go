package rollout

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// WaveTargets returns, for each wave that adds devices, the devices it adds,
// for a fleet that does not change during the rollout. seed is the rollout
// ID; waves are cumulative percentages (see ParseWaves).
//
// Devices are ordered by the SHA-256 of seed, a zero byte and the device ID
// (ties, which do not happen in practice, by ID), so the order is the same
// on every call and every hub, does not depend on the order of devices, and
// spreads the first waves across the fleet instead of taking the first IDs
// of a site. Another rollout (another seed) picks other canaries.
//
// Wave i covers the first ceil(n × waves[i] / 100) devices of that order, so
// a wave never rounds down to nothing: 1% of 5 devices is 1 device. A wave
// that adds no device to the previous one (small fleets: 1% and 10% of 3
// devices are both 1 device) is left out, so the result has between 0 and
// len(waves) entries; no devices gives none. Duplicate IDs count once.
// Percentages outside 0..100 are clamped.
//
// The Machine uses the same order and counts, recomputed from the devices
// matching at each step, so with a fixed fleet its Assign actions are
// exactly these lists.
func WaveTargets(seed string, devices []string, waves []int) [][]string {
	ordered := order(seed, devices)
	var out [][]string
	done := 0
	for _, pct := range waves {
		c := waveCount(len(ordered), pct)
		if c <= done {
			continue
		}
		out = append(out, ordered[done:c:c])
		done = c
	}
	return out
}

// waveCount is the cumulative number of devices in a wave of pct percent
// of n devices, rounded up.
func waveCount(n, pct int) int {
	pct = min(max(pct, 0), 100)
	return (n*pct + 99) / 100
}

// order returns the distinct devices sorted by rank(seed, device).
func order(seed string, devices []string) []string {
	type ranked struct {
		id   string
		rank uint64
	}
	rs := make([]ranked, 0, len(devices))
	for _, d := range devices {
		rs = append(rs, ranked{d, rank(seed, d)})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.id, b.id))
	})
	rs = slices.CompactFunc(rs, func(a, b ranked) bool { return a.id == b.id })
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.id
	}
	return out
}

// rank is the device's stable pseudo-random position for the rollout seed.
func rank(seed, device string) uint64 {
	h := sha256.New()
	h.Write([]byte(seed))
	h.Write([]byte{0})
	h.Write([]byte(device))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
