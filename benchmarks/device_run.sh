#!/usr/bin/env bash
# One device session's checks for issue 15, in one call (by hand, not CI).
#
# Sessions that are lent a GPU get 15 minutes of device time in all, start-up included, and
# at most 10 minutes per command; this script runs everything a first look needs inside one
# command, each phase under its own time limit, so one slow phase cannot eat the others:
#
#   tests          the suite (XLA_PYTHON_CLIENT_PREALLOCATE=false, -n 8 xdist workers)
#   accelerator    benchmarks/accelerator.py: fastnet, seed-cnn, resnet20 in f32 and bf16
#   steps-per-call the same for resnet20-f32 and fastnet-bf16 at --steps-per-call 8
#                  (whether a scan of steps per call beats one step per call there)
#   fast-recipe    `cnnjax train --recipe fast` on the CIFAR-10 zip (if data/ holds it)
#
# From the repository root (on the device machine, through `run`):
#   mkdir -p data && cp ../shared/data/cifar10-train-jpeg.zip data/   # here, then carry ["data"]
#   bash benchmarks/device_run.sh                 # all phases, logs and JSON under $OUT
#   bash benchmarks/device_run.sh accelerator     # chosen phases only
#   bash benchmarks/device_run.sh --dry-run       # print the commands, run nothing
#
# Writes <phase>.log per phase (and accelerator.json, steps-per-call.json,
# fast-recipe-metrics.jsonl) under $OUT (default runs/device): 7 files at most, within the
# 8 that `run` brings back. The phase limits sum to 540 s.
set -uo pipefail

OUT=${OUT:-runs/device}
DRY=0
PHASES=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    tests|accelerator|steps-per-call|fast-recipe) PHASES+=("$arg") ;;
    *) echo "device_run.sh: unknown argument '$arg' (phases: tests accelerator" \
            "steps-per-call fast-recipe; option: --dry-run)" >&2; exit 2 ;;
  esac
done
[ ${#PHASES[@]} -eq 0 ] && PHASES=(tests accelerator steps-per-call fast-recipe)

export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
CLI=(python -c 'import sys; from cnnjax.cli import main; sys.exit(main(sys.argv[1:]))')
ZIP=data/cifar10-train-jpeg.zip
[ "$DRY" = 1 ] || mkdir -p "$OUT"

# phase NAME LIMIT_SECONDS COMMAND...: runs COMMAND into $OUT/NAME.log under the limit.
phase() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s): $*"
  [ "$DRY" = 1 ] && return 0
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc after $((SECONDS - t0)) s$([ $rc = 124 ] && echo ' (time limit)')"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   /'
}

[ "$DRY" = 1 ] || python -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1 | tail -n 1
for p in "${PHASES[@]}"; do
  case "$p" in
    tests)
      phase tests 210 python -m pytest -q -n 8 -p no:cacheprovider tests ;;
    accelerator)
      phase accelerator 170 python benchmarks/accelerator.py --json "$OUT/accelerator.json" ;;
    steps-per-call)
      phase steps-per-call 80 python benchmarks/accelerator.py --only resnet20-f32 \
        --only fastnet-bf16 --steps-per-call 8 --json "$OUT/steps-per-call.json" ;;
    fast-recipe)
      if [ ! -f "$ZIP" ]; then
        echo "== fast-recipe: skipped ($ZIP missing: copy it there and carry data/)"
        continue
      fi
      phase fast-recipe 80 "${CLI[@]}" train --recipe fast --data cifar10 --data-dir "$ZIP" \
        --out runs/device-fast --quiet --no-plots --compile-cache off
      [ "$DRY" = 1 ] || cp runs/device-fast/metrics.jsonl "$OUT/fast-recipe-metrics.jsonl" ;;
  esac
done
