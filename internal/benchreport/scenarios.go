package benchreport

import (
	"fmt"
	"math"
	"strconv"
)

// Scenario keys.
const (
	KeyDownload     = "download"
	KeyInference    = "inference"
	KeyFrontEnds    = "frontends"
	KeyVerification = "verification"
	KeyIngest       = "ingest"
	KeyFootprint    = "footprint"
	KeyConvergence  = "convergence"
)

// Goals from the benchmarks issue.
const (
	GoalDownloadSpeed   = 0.9    // agent download speed ÷ minio-go FGetObject, at least
	GoalInferenceRatio  = 1.10   // agent Session.Run time ÷ bare onnxruntime_go run, at most
	GoalVerifyPerSecond = 10_000 // assignments verified per second per core, at least
	GoalIdleRSSMiB      = 30     // agent idle VmRSS in MiB ("30 MB", read as MiB), at most
)

// Download sizes the fetch benchmark measures, in MiB.
var downloadSizesMiB = []int{1, 64, 256}

// parallelMinMiB is ParallelMinBytes of the fetch benchmark's parallel
// mode: smaller objects are fetched in one stream.
const parallelMinMiB = 32

// Scenarios returns the benchmark invocations make bench runs each round.
// benchtime is -test.benchtime for the benchmarks that loop on time
// (verification, inference, front ends, ingest); downloads run a fixed 3
// alternating pairs per round and the footprint one agent per round.
// agentBin is the fleetagent binary whose footprint is measured, an
// absolute path: the benchmark runs in cmd/fleetagent.
func Scenarios(benchtime, agentBin string) []Scenario {
	return []Scenario{
		{Key: KeyVerification, Package: "./manifest", Bench: "^BenchmarkVerifyAssignment$", Benchtime: benchtime},
		{Key: KeyInference, Package: "./agent/runtime", Bench: "^BenchmarkRunAgentVsBare$/^alternating$", Benchtime: benchtime},
		{Key: KeyFrontEnds, Package: "./agent/serve", Bench: "^BenchmarkFrontEnds(Throughput)?$", Benchtime: benchtime},
		{Key: KeyIngest, Package: "./hub/store/sqlite", Bench: "^BenchmarkAddTelemetry$", Benchtime: benchtime},
		{Key: KeyDownload, Package: "./agent/fetch", Bench: "^BenchmarkDownload$", Benchtime: "3x"},
		{Key: KeyFootprint, Package: "./cmd/fleetagent", Bench: "^BenchmarkFootprint$", Benchtime: "1x",
			Env: []string{"MODELFLEET_AGENT_BIN=" + agentBin}},
	}
}

// ConvergenceScenario returns the fleet convergence benchmark for agents
// simulated agents and a release of artifactSize (e.g. "10MiB"):
// BenchmarkConvergence of package hub/sim, against a real Mosquitto and
// MinIO, run once. The simulation runs it per fleet size after the rounds
// (Simulator).
func ConvergenceScenario(agents int, artifactSize string) Scenario {
	return Scenario{Key: KeyConvergence, Package: "./hub/sim", Bench: "^" + convergenceBench + "$", Benchtime: "1x",
		Env: []string{"MODELFLEET_SIM_AGENTS=" + strconv.Itoa(agents), "MODELFLEET_SIM_ARTIFACT_SIZE=" + artifactSize}}
}

// Goal is one target of the benchmarks issue and whether the run met it.
type Goal struct {
	// What is measured, e.g. "Download 64 MiB, single stream".
	What string
	// Target, e.g. "≥ 0.9× minio-go".
	Target string
	// Measured is the median and spread.
	Measured string
	// Status is "met", "not met" or "not measured".
	Status string
	// Reason explains a status other than "met".
	Reason string
}

// Goal statuses.
const (
	StatusMet         = "met"
	StatusNotMet      = "not met"
	StatusNotMeasured = "not measured"
)

// judge compares a summary's median with limit: at least (atLeast) or at
// most. why explains a summary without samples.
func judge(what, target string, s Summary, limit float64, atLeast bool, format func(float64) string, why string) Goal {
	g := Goal{What: what, Target: target, Measured: formatSummary(s, format)}
	switch {
	case s.N == 0:
		g.Status, g.Reason = StatusNotMeasured, why
	case atLeast && s.Median >= limit, !atLeast && s.Median <= limit:
		g.Status = StatusMet
	default:
		g.Status = StatusNotMet
		cmp := "<"
		if !atLeast {
			cmp = ">"
		}
		g.Reason = fmt.Sprintf("median %s %s %s", format(s.Median), cmp, format(limit))
	}
	return g
}

// formatSummary prints "median (min–max)", or "—" without samples.
func formatSummary(s Summary, format func(float64) string) string {
	switch s.N {
	case 0:
		return "—"
	case 1:
		return format(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", format(s.Median), format(s.Min), format(s.Max))
}

// Number formats.
func fixed(decimals int) func(float64) string {
	return func(v float64) string { return strconv.FormatFloat(v, 'f', decimals, 64) }
}

func ratio(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) + "×" }

// thousands prints v rounded to an integer, with commas between thousands.
func thousands(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	s := strconv.FormatInt(int64(math.Round(math.Abs(v))), 10)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if v < 0 {
		return "-" + string(out)
	}
	return string(out)
}

func scale(s []float64, f float64) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		out[i] = v * f
	}
	return out
}

func inverse(s []float64, f float64) []float64 {
	out := make([]float64, len(s))
	for i, v := range s {
		out[i] = f / v
	}
	return out
}
