package rollout

import (
	"fmt"
	"slices"
	"testing"
)

func TestWaveTargetsSizes(t *testing.T) {
	def := []int{1, 10, 50, 100}
	tests := []struct {
		name  string
		n     int
		waves []int
		want  []int // devices added by each wave
	}{
		{name: "no devices", n: 0, waves: def, want: nil},
		{name: "one device", n: 1, waves: def, want: []int{1}},
		{name: "two devices", n: 2, waves: def, want: []int{1, 1}},
		{name: "three devices", n: 3, waves: def, want: []int{1, 1, 1}},          // 1,1,2,3 cumulative
		{name: "five devices 1% is one", n: 5, waves: def, want: []int{1, 2, 2}}, // 1,1,3,5
		{name: "ten devices", n: 10, waves: def, want: []int{1, 4, 5}},           // 1,1,5,10
		{name: "hundred devices", n: 100, waves: def, want: []int{1, 9, 40, 50}},
		{name: "101 devices round up", n: 101, waves: def, want: []int{2, 9, 40, 50}}, // 2,11,51,101
		{name: "thousand devices", n: 1000, waves: def, want: []int{10, 90, 400, 500}},
		{name: "single wave", n: 7, waves: []int{100}, want: []int{7}},
		{name: "two halves odd", n: 7, waves: []int{50, 100}, want: []int{4, 3}},
		{name: "clamped percentages", n: 10, waves: []int{-5, 0, 150}, want: []int{10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devices := fleet(tt.n)
			got := WaveTargets("r1", devices, tt.waves)
			sizes := make([]int, len(got))
			seen := map[string]bool{}
			for i, w := range got {
				sizes[i] = len(w)
				for _, d := range w {
					if seen[d] {
						t.Fatalf("device %s in two waves", d)
					}
					seen[d] = true
				}
			}
			if !slices.Equal(sizes, tt.want) {
				t.Fatalf("wave sizes = %v, want %v", sizes, tt.want)
			}
			if len(seen) != tt.n {
				t.Fatalf("%d of %d devices covered", len(seen), tt.n)
			}
		})
	}
}

func TestWaveTargetsDeterministic(t *testing.T) {
	devices := fleet(50)
	want := WaveTargets("rollout-7", devices, []int{1, 10, 50, 100})

	reversed := slices.Clone(devices)
	slices.Reverse(reversed)
	withDupes := append(slices.Clone(devices), devices[:10]...)
	for name, in := range map[string][]string{"same": devices, "reversed": reversed, "duplicates": withDupes} {
		if got := WaveTargets("rollout-7", in, []int{1, 10, 50, 100}); !equalWaves(got, want) {
			t.Errorf("%s input: waves differ:\n%v\n%v", name, got, want)
		}
	}
	if other := WaveTargets("rollout-8", devices, []int{1, 10, 50, 100}); equalWaves(other, want) {
		t.Error("another rollout ID picks the same order")
	}
	// Pinned: the order must not change between releases, or a restarted
	// hub running a newer build would pick other devices mid-rollout.
	if got := WaveTargets("seed", []string{"a", "b", "c", "d"}, []int{25, 50, 100}); fmt.Sprint(got) != "[[a] [d] [c b]]" {
		t.Errorf("pinned order = %v", got)
	}
}

func TestWaveTargetsSpread(t *testing.T) {
	// 10 sites of 100 devices with sequential IDs: a 10% first wave should
	// touch most sites rather than all of site 0.
	var devices []string
	for site := range 10 {
		for i := range 100 {
			devices = append(devices, fmt.Sprintf("site%d-dev%03d", site, i))
		}
	}
	waves := WaveTargets("rollout-1", devices, []int{10, 100})
	if len(waves[0]) != 100 {
		t.Fatalf("first wave has %d devices, want 100", len(waves[0]))
	}
	perSite := map[byte]int{}
	for _, d := range waves[0] {
		perSite[d[4]]++
	}
	if len(perSite) < 9 {
		t.Fatalf("first wave covers %d of 10 sites: %v", len(perSite), perSite)
	}
	for site, n := range perSite {
		if n > 25 {
			t.Errorf("site %c has %d of 100 canaries", site, n)
		}
	}
}

func fleet(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("dev-%03d", i)
	}
	return out
}

func equalWaves(a, b [][]string) bool {
	return slices.EqualFunc(a, b, func(x, y []string) bool { return slices.Equal(x, y) })
}
