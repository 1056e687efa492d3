package benchreport

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Table is a Markdown table.
type Table struct {
	Header []string
	Rows   [][]string
}

// Section is one part of the report: prose, a table and notes.
type Section struct {
	Title string
	Text  string
	Table Table
	Notes []string
	// Image is a path relative to the report, shown after the table.
	Image string
}

// Binary is a built binary's size.
type Binary struct {
	Name  string
	Bytes int64
}

// Report is everything BENCHMARKS.md shows.
type Report struct {
	Machine  Machine
	Started  time.Time
	Duration time.Duration
	Rounds   int
	// Invocation is the command that produced the report.
	Invocation string
	Goals      []Goal
	Sections   []Section
	Commands   []string
	Failures   []string
}

// Inputs are the measurements a report is built from.
type Inputs struct {
	Runs        Runs
	Rounds      int
	Binaries    []Binary
	Convergence []ConvergenceRun
	// ConvergencePlot is the plot's path relative to the report, empty
	// when there is none.
	ConvergencePlot string
	ArtifactSize    string
}

// Build turns measurements into goals and sections.
func Build(in Inputs) ([]Goal, []Section) {
	var goals []Goal
	var sections []Section
	for _, f := range []func(Inputs) ([]Goal, Section){download, inference, frontEnds, verification, ingest, footprint, convergence} {
		g, s := f(in)
		goals = append(goals, g...)
		sections = append(sections, s)
	}
	return goals, sections
}

func skipNote(r Runs, key, name string) string {
	if reason, ok := r.Skipped(key, name); ok {
		return "skipped: " + reason
	}
	if len(r[key]) == 0 {
		return "the scenario did not run"
	}
	return "no result in the benchmark output (see Failures)"
}

func download(in Inputs) ([]Goal, Section) {
	s := Section{
		Title: "Download",
		Text: "The agent's verified download (`fetch.Fetcher.Fetch`: sha256 while copying, size cap, fsync, rename) " +
			"against a bare minio-go `FGetObject` of the same object from the same MinIO on loopback, alternating " +
			"the two in every iteration (`BenchmarkDownload`, agent/fetch). Speed is FGetObject's time ÷ the agent's " +
			"(1.0 = parity, above 1 the agent is faster), per round the median of 3 alternating pairs. Parallel " +
			"ranges: 4 connections, 16 MiB parts.",
		Table: Table{Header: []string{"object", "mode", "agent MiB/s", "agent ms", "FGetObject ms", "speed vs FGetObject", "goal ≥ 0.9×"}},
	}
	const target = "≥ 0.9× minio-go FGetObject"
	var goals []Goal
	for _, size := range downloadSizesMiB {
		for _, mode := range []string{"single", "parallel"} {
			label := map[string]string{"single": "single stream", "parallel": "parallel ranges"}[mode]
			what := fmt.Sprintf("Download %d MiB, %s", size, label)
			if mode == "parallel" && size < parallelMinMiB {
				g := Goal{What: what, Target: target, Measured: "—", Status: StatusNotMeasured,
					Reason: fmt.Sprintf("below %d MiB the fetcher uses one stream (the single-stream row)", parallelMinMiB)}
				goals = append(goals, g)
				s.Table.Rows = append(s.Table.Rows, []string{fmt.Sprintf("%d MiB", size), mode, "—", "—", "—", "—", statusCell(g)})
				continue
			}
			name := fmt.Sprintf("BenchmarkDownload/%dMiB/%s", size, mode)
			speed := Summarize(in.Runs.Samples(KeyDownload, name, "speed-vs-minio"))
			g := judge(what, target, speed, GoalDownloadSpeed, true, ratio, skipNote(in.Runs, KeyDownload, name))
			goals = append(goals, g)
			s.Table.Rows = append(s.Table.Rows, []string{
				fmt.Sprintf("%d MiB", size), mode,
				formatSummary(Summarize(in.Runs.Samples(KeyDownload, name, "agent-MiB/s")), fixed(0)),
				formatSummary(Summarize(in.Runs.Samples(KeyDownload, name, "agent-ms")), fixed(0)),
				formatSummary(Summarize(in.Runs.Samples(KeyDownload, name, "baseline-ms")), fixed(0)),
				formatSummary(speed, ratio), statusCell(g),
			})
		}
	}
	return goals, s
}

func statusCell(g Goal) string {
	if g.Status == StatusMet || g.Reason == "" {
		return g.Status
	}
	return g.Status + ": " + g.Reason
}

func inference(in Inputs) ([]Goal, Section) {
	const name = "BenchmarkRunAgentVsBare/alternating"
	s := Section{
		Title: "Inference",
		Text: "One window (1×64 float32) through the example model v1: the agent's `runtime.Session.Run` against a bare " +
			"onnxruntime_go `AdvancedSession.Run` with tensors made once and the same thread settings, interleaved in " +
			"rounds of 64 runs with the order rotated (`BenchmarkRunAgentVsBare/alternating`, agent/runtime). " +
			"\"agent-ctx\" passes a cancellable context, which adds run options and a cancellation hook.",
		Table: Table{Header: []string{"variant", "ns/run", "bare Session.Run ns/run", "ratio to bare", "goal ≤ 1.10×"}},
	}
	why := skipNote(in.Runs, KeyInference, name)
	bareNs := Summarize(in.Runs.Samples(KeyInference, name, "bare-ns/run"))
	var goals []Goal
	for _, v := range []struct{ label, ratioUnit, nsUnit string }{
		{"agent, context.Background", "agent/bare", "agent-ns/run"},
		{"agent, cancellable context", "agent-ctx/bare", ""},
	} {
		r := Summarize(in.Runs.Samples(KeyInference, name, v.ratioUnit))
		g := judge("Inference in-process, "+v.label, "≤ 1.10× bare Session.Run", r, GoalInferenceRatio, false, ratio, why)
		goals = append(goals, g)
		ns := "—"
		if v.nsUnit != "" {
			ns = formatSummary(Summarize(in.Runs.Samples(KeyInference, name, v.nsUnit)), fixed(0))
		} else {
			// ns/run of this variant is the ratio times the bare time of the same round.
			ns = formatSummary(Summarize(multiply(in.Runs.Samples(KeyInference, name, v.ratioUnit), in.Runs.Samples(KeyInference, name, "bare-ns/run"))), fixed(0))
		}
		s.Table.Rows = append(s.Table.Rows, []string{v.label, ns, formatSummary(bareNs, fixed(0)), formatSummary(r, ratio), statusCell(g)})
	}
	return goals, s
}

func multiply(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] * b[i]
	}
	return out
}

func frontEnds(in Inputs) ([]Goal, Section) {
	s := Section{
		Title: "Inference front ends",
		Text: "One window scored by the example model through each front end of a running agent on loopback " +
			"(agent/serve): the Open Inference Protocol over HTTP, MQTT request/reply through Mosquitto, and an MQTT " +
			"topic binding. The baseline is the in-process `Inferer.Infer` measured in the same run. Latency and " +
			"the first throughput column are with one request in flight (`BenchmarkFrontEnds`; 1 s ÷ mean time per " +
			"request); the last two with several clients at once (`BenchmarkFrontEndsThroughput`, their number in " +
			"the header), and that throughput as a share of the in-process one of the same round.",
		Table: Table{Header: []string{"path", "p50 µs", "p99 µs", "p50 ÷ in-process", "p99 ÷ in-process", "requests/s, 1 in flight"}},
	}
	clients := Summarize(in.Runs.Samples(KeyFrontEnds, "BenchmarkFrontEndsThroughput/bare-infer", "in-flight"))
	inFlight := "several"
	if clients.N > 0 {
		inFlight = fixed(0)(clients.Median)
	}
	s.Table.Header = append(s.Table.Header, "requests/s, "+inFlight+" in flight", "÷ in-process, "+inFlight+" in flight")
	bareTput := in.Runs.Samples(KeyFrontEnds, "BenchmarkFrontEndsThroughput/bare-infer", "requests/s")
	for _, v := range []struct{ sub, label string }{
		{"bare-infer", "in-process Inferer.Infer (baseline)"},
		{"http-oip", "OIP over HTTP"},
		{"mqtt-request-reply", "MQTT request/reply"},
		{"mqtt-binding", "MQTT topic binding"},
	} {
		name := "BenchmarkFrontEnds/" + v.sub
		row := []string{v.label, "—", "—", "—", "—", "—"}
		if Summarize(in.Runs.Samples(KeyFrontEnds, name, "ns/op")).N == 0 {
			row[5] = skipNote(in.Runs, KeyFrontEnds, name)
		} else {
			row = []string{
				v.label,
				formatSummary(Summarize(in.Runs.Samples(KeyFrontEnds, name, "p50-µs")), fixed(0)),
				formatSummary(Summarize(in.Runs.Samples(KeyFrontEnds, name, "p99-µs")), fixed(0)),
				formatSummary(Summarize(in.Runs.Samples(KeyFrontEnds, name, "p50-x-bare")), ratio),
				formatSummary(Summarize(in.Runs.Samples(KeyFrontEnds, name, "p99-x-bare")), ratio),
				formatSummary(Summarize(inverse(in.Runs.Samples(KeyFrontEnds, name, "ns/op"), 1e9)), thousands),
			}
		}
		tput := in.Runs.Samples(KeyFrontEnds, "BenchmarkFrontEndsThroughput/"+v.sub, "requests/s")
		if Summarize(tput).N == 0 {
			row = append(row, "—", "—")
		} else {
			row = append(row, formatSummary(Summarize(tput), thousands), formatSummary(Summarize(Ratios(tput, bareTput)), ratio))
		}
		s.Table.Rows = append(s.Table.Rows, row)
	}
	return nil, s
}

func verification(in Inputs) ([]Goal, Section) {
	s := Section{
		Title: "Verification",
		Text: "`Verifier.VerifyAssignment` of a typical assignment (three models, each with a release-signed manifest; " +
			"`BenchmarkVerifyAssignment`, manifest) on one goroutine, so per core. \"cold\" forgets verified manifests " +
			"before each call (four ed25519 verifications); \"warm\" is an agent's steady state when the hub refreshes " +
			"the assignment (only the director signature is checked). The baseline is a bare `ed25519.Verify` of the " +
			"assignment's signed bytes in the same run. Rates are per wall-clock second of one goroutine, so load " +
			"from other processes on the machine lowers them; the ratio to bare ed25519 is the figure that travels.",
		Table: Table{Header: []string{"case", "assignments/s per core", "bare ed25519.Verify/s", "ratio to bare", "goal ≥ 10,000/s"}},
	}
	base := in.Runs.Samples(KeyVerification, "BenchmarkVerifyAssignment/baseline-ed25519", "verifications/s")
	var goals []Goal
	for _, c := range []string{"warm", "cold"} {
		name := "BenchmarkVerifyAssignment/" + c
		v := in.Runs.Samples(KeyVerification, name, "verifications/s")
		sum := Summarize(v)
		perSecond := func(v float64) string { return thousands(v) + "/s" }
		g := judge("Verification, "+c, "≥ 10,000 assignments/s per core", sum, GoalVerifyPerSecond, true, perSecond, skipNote(in.Runs, KeyVerification, name))
		if c == "cold" && g.Status == StatusNotMet {
			g.Reason += "; a cold verification checks four ed25519 signatures, so its floor is a quarter of the bare rate"
		}
		goals = append(goals, g)
		s.Table.Rows = append(s.Table.Rows, []string{c, formatSummary(sum, thousands), formatSummary(Summarize(base), thousands),
			formatSummary(Summarize(Ratios(v, base)), ratio), statusCell(g)})
	}
	return goals, s
}

func ingest(in Inputs) ([]Goal, Section) {
	const name = "BenchmarkAddTelemetry"
	s := Section{
		Title: "Hub ingest",
		Text: "Telemetry payloads stored per second by the hub's SQLite store (`Store.AddTelemetry`, merging into minute " +
			"rollups; `BenchmarkAddTelemetry`, hub/store/sqlite), against one plain autocommit INSERT of the payload's " +
			"JSON per message on the same database, in alternating blocks of 50.",
		Table: Table{Header: []string{"figure", "messages/s", "raw INSERTs/s", "ratio to raw INSERT"}},
	}
	if Summarize(in.Runs.Samples(KeyIngest, name, "msgs/s")).N == 0 {
		s.Table.Rows = append(s.Table.Rows, []string{"AddTelemetry", "—", "—", skipNote(in.Runs, KeyIngest, name)})
		return nil, s
	}
	s.Table.Rows = append(s.Table.Rows, []string{"AddTelemetry, one writer",
		formatSummary(Summarize(in.Runs.Samples(KeyIngest, name, "msgs/s")), thousands),
		formatSummary(Summarize(in.Runs.Samples(KeyIngest, name, "raw-inserts/s")), thousands),
		formatSummary(Summarize(in.Runs.Samples(KeyIngest, name, "x-raw-insert")), ratio),
	})
	return nil, s
}

func footprint(in Inputs) ([]Goal, Section) {
	const name = "BenchmarkFootprint"
	s := Section{
		Title: "Footprint",
		Text: "Binary sizes as `make build` makes them (`-trimpath -ldflags '-s -w'`), and the memory of a real " +
			"`bin/fleetagent run` against a real Mosquitto and MinIO, read from /proc/PID/status 3 s after it " +
			"connected (idle, no model) and 3 s after the example model became active (`BenchmarkFootprint`, " +
			"cmd/fleetagent; one fresh agent per round). The agent loads ONNX Runtime's shared library at start-up, " +
			"so its resident pages count in the idle figure; the table shows how much (from /proc/PID/smaps).",
		Table: Table{Header: []string{"figure", "MiB", "goal"}},
	}
	for _, b := range in.Binaries {
		s.Table.Rows = append(s.Table.Rows, []string{"binary size, " + b.Name, strconv.FormatFloat(float64(b.Bytes)/(1<<20), 'f', 1, 64), ""})
	}
	idle := in.Runs.Samples(KeyFootprint, name, "idle-rss-KiB")
	ort := in.Runs.Samples(KeyFootprint, name, "idle-ort-rss-KiB")
	idleSum := Summarize(scale(idle, 1.0/1024))
	why := skipNote(in.Runs, KeyFootprint, name)
	mib := func(v float64) string { return fixed(1)(v) + " MiB" }
	g := judge("Agent idle RSS, no model", "≤ 30 MiB VmRSS", idleSum, GoalIdleRSSMiB, false, mib, "")
	if g.Status == StatusNotMeasured {
		g.Reason = why
	} else if g.Status == StatusNotMet {
		without := Summarize(scale(subtract(idle, ort), 1.0/1024))
		g.Reason += fmt.Sprintf("; ONNX Runtime's library, loaded at start-up, is %s MiB of it, the rest %s MiB",
			formatSummary(Summarize(scale(ort, 1.0/1024)), fixed(1)), formatSummary(without, fixed(1)))
	}
	rows := []struct {
		label, unit string
		goal        bool
	}{
		{"idle, no model: VmRSS", "idle-rss-KiB", true},
		{"idle, no model: VmHWM (peak)", "idle-hwm-KiB", false},
		{"idle: of VmRSS, libonnxruntime pages", "idle-ort-rss-KiB", false},
		{"example model active: VmRSS", "model-rss-KiB", false},
		{"example model active: VmHWM (peak)", "model-hwm-KiB", false},
	}
	for _, r := range rows {
		goal := ""
		if r.goal {
			goal = "≤ 30 MiB: " + statusCell(g)
		}
		s.Table.Rows = append(s.Table.Rows, []string{r.label,
			formatSummary(Summarize(scale(in.Runs.Samples(KeyFootprint, name, r.unit), 1.0/1024)), fixed(1)), goal})
	}
	s.Notes = append(s.Notes, "\"30 MB\" in the goal is read as 30 MiB (/proc reports KiB); as 30·10⁶ bytes it is 28.6 MiB.")
	return []Goal{g}, s
}

func subtract(a, b []float64) []float64 {
	out := make([]float64, min(len(a), len(b)))
	for i := range out {
		out[i] = a[i] - b[i]
	}
	return out
}

func convergence(in Inputs) ([]Goal, Section) {
	s := Section{
		Title: "Fleet convergence",
		Text: fmt.Sprintf("`BenchmarkConvergence` (package hub/sim) with `MODELFLEET_SIM_AGENTS=N` and a %s release: N "+
			"simulated agents, each with its own MQTT session against a real Mosquitto (`max_queued_messages` 100,000 "+
			"or 5 × N if more, `max_inflight_messages` 1000, `max_connections` -1, set by internal/testenv) and its "+
			"own trust state, install a release that a hub core running in the benchmark process pushed to a real "+
			"MinIO; the artifact is downloaded from MinIO once into a blob store the agents share, and every agent "+
			"verifies the assignment's and manifest's signatures and the artifact's sha256 (no ONNX Runtime session). "+
			"One rollout to all N agents in one wave, timed from the rollout's start. \"total\" is until the hub "+
			"marked the rollout succeeded; p50/p99/max are per agent, until it reported the version active. Goroutines "+
			"and \"RSS peak\" are the benchmark process's (agents and hub core); \"broker RSS\" is Mosquitto's VmHWM. "+
			"The baseline is linear scaling from the smallest fleet: total ÷ (smallest fleet's total × N ÷ its N); "+
			"below 1 is better than linear. One run per size.", in.ArtifactSize),
		Table: Table{Header: []string{"agents", "download", "connect s", "p50 s", "p99 s", "max s", "total s", "total ÷ linear",
			"goroutines peak", "RSS peak MiB", "broker RSS peak MiB", "note"}},
		Image: in.ConvergencePlot,
	}
	var baseN, baseTotal float64
	for _, r := range in.Convergence {
		if r.Result == nil {
			s.Table.Rows = append(s.Table.Rows, []string{strconv.Itoa(r.Agents), "—", "—", "—", "—", "—", "—", "—", "—", "—", "—", r.Note})
			continue
		}
		c := r.Result
		if baseN == 0 && c.TotalSeconds > 0 {
			baseN, baseTotal = float64(c.Agents), c.TotalSeconds
		}
		lin := "—"
		if baseN > 0 {
			lin = ratio(c.TotalSeconds / (baseTotal * float64(c.Agents) / baseN))
		}
		s.Table.Rows = append(s.Table.Rows, []string{
			strconv.Itoa(c.Agents), c.Download, fixed(2)(c.ConnectSeconds), fixed(2)(c.P50Seconds), fixed(2)(c.P99Seconds),
			fixed(2)(c.MaxSeconds), fixed(2)(c.TotalSeconds), lin, strconv.Itoa(c.GoroutinesPeak),
			fixed(0)(float64(c.RSSPeakBytes) / (1 << 20)), fixed(0)(float64(c.BrokerRSSPeakBytes) / (1 << 20)), r.Note,
		})
	}
	return nil, s
}

// Markdown renders the report.
func (r Report) Markdown() []byte {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Benchmarks\n\n")
	w("Generated by `%s` on %s in %s. Do not edit by hand: run `make bench` to regenerate it.\n\n",
		r.Invocation, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Duration.Round(time.Second))
	w("Every figure is the median over %d rounds with its min–max range in parentheses. Each round runs every "+
		"benchmark once, one after the other, so the scenarios alternate and load from the rest of the machine "+
		"weighs on all of them alike; a figure with a natural baseline is given as a ratio to that baseline "+
		"measured in the same run (inside the benchmark, or paired by round). Absolute figures depend on how busy "+
		"the machine was (see the load average below); ratios much less so.\n\n", r.Rounds)

	w("## Machine\n\n")
	writeTable(&b, Table{Header: []string{"", ""}, Rows: r.Machine.rows()})
	w("\n## Goals\n\n")
	goals := Table{Header: []string{"goal", "target", "measured", "status"}}
	for _, g := range r.Goals {
		goals.Rows = append(goals.Rows, []string{g.What, g.Target, g.Measured, statusCell(g)})
	}
	writeTable(&b, goals)
	for _, s := range r.Sections {
		w("\n## %s\n\n%s\n\n", s.Title, s.Text)
		writeTable(&b, s.Table)
		if s.Image != "" {
			w("\n![%s](%s)\n", s.Title, s.Image)
		}
		if len(s.Notes) > 0 {
			w("\n")
			for _, n := range s.Notes {
				w("- %s\n", n)
			}
		}
	}
	if len(r.Failures) > 0 {
		w("\n## Failures\n\n")
		for _, f := range r.Failures {
			w("```\n%s\n```\n\n", strings.TrimSpace(f))
		}
	}
	w("\n## Commands\n\n`$BENCHBIN` is a temporary directory holding the test binaries; each benchmark runs in its "+
		"package's directory, as `go test` would, once per round (%d rounds) in this order; then the fleet convergence benchmark once per fleet size.\n\n```\n", r.Rounds)
	seen := map[string]bool{}
	for _, c := range r.Commands {
		if !seen[c] {
			seen[c] = true
			w("%s\n", c)
		}
	}
	w("```\n")
	return []byte(b.String())
}

func writeTable(b *strings.Builder, t Table) {
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	row := func(cells []string) {
		b.WriteString("|")
		for _, c := range cells {
			b.WriteString(" " + cell(c) + " |")
		}
		b.WriteString("\n")
	}
	row(t.Header)
	sep := make([]string, len(t.Header))
	for i := range sep {
		sep[i] = "---"
	}
	row(sep)
	for _, r := range t.Rows {
		row(r)
	}
}
