#!/usr/bin/env bash
# Enforces the package boundaries of DESIGN.md:
#   - manifest/ imports the standard library only;
#   - the fleetagent binary links no hub code and no dev-only servers.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=github.com/modelfleet/modelfleet
fail=0

nonstd=$(go list -deps -f '{{if not .Standard}}{{.ImportPath}}{{end}}' ./manifest | grep -v "^$mod/manifest\$" || true)
if [ -n "$nonstd" ]; then
	echo "check-imports: manifest/ must import the standard library only, found:" >&2
	echo "$nonstd" | sed 's/^/  /' >&2
	fail=1
fi

bad=$(go list -deps ./cmd/fleetagent | grep -E "^$mod/hub(/|\$)|mochi-mqtt|versity" || true)
if [ -n "$bad" ]; then
	echo "check-imports: cmd/fleetagent must not link hub or dev-server code, found:" >&2
	echo "$bad" | sed 's/^/  /' >&2
	fail=1
fi
exit $fail
