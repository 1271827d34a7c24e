#!/usr/bin/env bash
# Type completeness of cnnjax's exported API: `pyright --verifytypes` on a non-editable install
# of this checkout, failing when the score is below MIN_PERCENT (default 95).
#
#   tools/verify_types.sh [MIN_PERCENT]
#
# PYTHON names the interpreter whose packages (jax, flax, ...) pyright resolves imports with and
# whose pip and pyright are used (default: .venv/bin/python if present, else python3).
#
# Why the detour through a temporary install:
# - `pip install -e .` puts cnnjax behind a meta-path finder that pyright cannot follow: on the
#   development install --verifytypes reports 'Package directory: ""' and 0 symbols.
# - --verifytypes resolves imports with the `python` first on PATH (it ignores --pythonpath), so
#   that interpreter's directory goes first on PATH and the temporary install on PYTHONPATH.
# - The install is built from a copy of the sources: an in-tree build reuses build/lib, which
#   keeps modules deleted since. pip's build isolation fetches setuptools and wheel.
# Unknown types that come from other packages (jax, flax, optax) are not counted (--ignoreexternal).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
min=${1:-95}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; else python=$(command -v python3); fi
fi
bindir=$(dirname "$python")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src"
cp -R "$root/pyproject.toml" "$root/README.md" "$root/cnnjax" "$tmp/src/"
find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m pip install --quiet --no-deps --target "$tmp/site" "$tmp/src"

# pyright exits 1 whenever a symbol is incomplete: the score decides, read from the JSON report.
(cd "$tmp" && PATH="$bindir:$PATH" PYTHONPATH="$tmp/site" "$python" -m pyright \
  --verifytypes cnnjax --ignoreexternal --pythonversion 3.10 --outputjson > "$tmp/report.json") || true

"$python" - "$tmp/report.json" "$tmp/site/" "$min" <<'PY'
import json
import sys

path, site, minimum = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
  with open(path) as f:
    report = json.load(f)
except ValueError:
  sys.exit(f"verify_types: pyright wrote no JSON report:\n{open(path).read()}")
tc = report["typeCompleteness"]
counts = tc["exportedSymbolCounts"]
total = sum(counts.values())
for d in tc.get("diagnostics", []) + report.get("generalDiagnostics", []):
  print(f"{d.get('severity')}: {d.get('message')}")
for s in tc["symbols"]:
  if s["isExported"] and (not s["isTypeKnown"] or s["isTypeAmbiguous"]):
    print(s["name"], "(ambiguous)" if s["isTypeAmbiguous"] else "(unknown)")
    for d in s["diagnostics"]:
      line = d.get("range", {}).get("start", {}).get("line", -1) + 1
      where = d.get("file", "").replace(site, "")
      message = d["message"].replace("\n", " ")
      print(f"    {where}:{line}: {message}" if where else f"    {message}")
score = 100 * tc["completenessScore"]
print(f"\nSymbols exported by cnnjax: {total} (known {counts['withKnownType']}, "
      f"ambiguous {counts['withAmbiguousType']}, unknown {counts['withUnknownType']})")
print(f"Type completeness score: {score:.1f}% (minimum {minimum:g}%)")
if total == 0 or score < minimum:
  sys.exit(1)
PY
