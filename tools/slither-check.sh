#!/usr/bin/env bash
# Static analysis of the contracts with Slither; run by tools/run-tests.sh before pytest.
#
# Slither runs on the contracts/ folder through the solc-js shim in standard-json mode (pointed
# at a single file with the shim it analyses nothing and exits 0). This step fails when Slither
# could not run, when it analysed no contract, or when it reports any finding of Medium or High
# impact. A finding we accept carries a `// slither-disable-next-line DETECTOR` comment with
# the reason beside it in the source.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SLITHER="${FLEML_SLITHER:-$ROOT/.fleml/slither-venv/bin/slither}"
SOLC="${SOLCX_BINARY_PATH:-$HOME/.solcx}/solc-v0.8.28"
[ -x "$SLITHER" ] || { echo "[slither] $SLITHER missing: run tools/setup.sh" >&2; exit 1; }
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Slither exits non-zero whenever it has findings, of any impact: judged below from its JSON
"$SLITHER" contracts/ --solc "$SOLC" --solc-standard-json --json "$WORK/slither.json" \
  > "$WORK/slither.log" 2>&1 || true
python3 - "$WORK/slither.json" "$WORK/slither.log" <<'PY'
import json
import re
import sys

report_path, log_path = sys.argv[1:3]
log = open(log_path, encoding="utf-8", errors="replace").read()
try:
    report = json.load(open(report_path, encoding="utf-8"))
except (OSError, ValueError):
    sys.exit(f"[slither] FAILED: no JSON report\n{log[-3000:]}")
if not report.get("success"):
    sys.exit(f"[slither] FAILED: {report.get('error')}\n{log[-3000:]}")
analysed = re.search(r"analyzed \((\d+) contracts with (\d+) detectors\)", log)
contracts = int(analysed.group(1)) if analysed else 0
if contracts == 0:
    sys.exit(f"[slither] FAILED: analysed 0 contracts\n{log[-3000:]}")
findings = report.get("results", {}).get("detectors", [])
serious = [f for f in findings if f.get("impact") in ("High", "Medium")]
counts = {}
for f in findings:
    counts[f["impact"]] = counts.get(f["impact"], 0) + 1
print(f"[slither] {contracts} contracts, {analysed.group(2)} detectors; findings by impact: "
      f"{counts or 'none'}", file=sys.stderr)
for f in serious:
    print(f"[slither] {f['impact']} {f['check']}: {f['description'].strip()}", file=sys.stderr)
if serious:
    sys.exit(f"[slither] FAILED: {len(serious)} finding(s) of Medium or High impact")
PY
