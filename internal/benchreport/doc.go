// Package benchreport drives the repository's benchmarks and writes
// BENCHMARKS.md: it builds each benchmarked package's test binary once,
// runs the binaries in alternating rounds (every scenario once per round,
// so load from the rest of the machine weighs on all of them alike), parses
// the `go test -bench` lines including custom metrics from
// b.ReportMetric, summarises every figure over the rounds as a median and
// its min–max spread, checks each against its goal, runs the fleet
// convergence benchmark (BenchmarkConvergence of package hub/sim, against
// a real Mosquitto and MinIO) once per fleet size within a time budget,
// and renders the report with a PNG plot.
//
// It is a development tool run by `make bench` (go run ./scripts/benchreport);
// neither fleethub nor fleetagent links it.
package benchreport
