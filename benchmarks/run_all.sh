#!/usr/bin/env bash
# Run every benchmark in one go and collect the tables in one Markdown file.
#
#   bash benchmarks/run_all.sh            # full sizes (about 15 minutes on 2 cores)
#   bash benchmarks/run_all.sh --quick    # small sizes, one run each (about 2 minutes)
#
# Sets the machine up first (scripts/setup.sh; run as root), installs the tools only the
# benchmarks need (hey, GNU time) with apt-get, and writes the output to $OUT
# (default benchmarks/last-run.md) as well as to the terminal.  Everything runs on loopback,
# in temporary folders under $BENCH_DIR (default: the system temp folder) that are removed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

missing=()
command -v hey >/dev/null || missing+=(hey)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run_all: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

OUT=${OUT:-benchmarks/last-run.md}
PY=.venv/bin/python
dir_args=()
[ -n "${BENCH_DIR:-}" ] && dir_args=(--dir "$BENCH_DIR")

start=$SECONDS
{
  echo "# Benchmark run $(date -u "+%Y-%m-%d %H:%M UTC") (${*:-full sizes})"
  echo
  for script in manifest_refresh manifest_after_sync delta real_disks noop_sync side_by_side scale_files fanout serving; do
    /usr/bin/time -f "- whole script ($script): %e s wall, %U s user + %S s system CPU, benchmark process max RSS %M KiB" \
      "$PY" "benchmarks/$script.py" "$@" "${dir_args[@]}" 2>&1
    echo
  done
  # Scale: fan-out at 50 sites (a smaller library: 51 copies must fit the disk).
  if [ "${1:-}" != "--quick" ]; then
    /usr/bin/time -f "- whole script (fanout at 50 sites): %e s wall, %U s user + %S s system CPU" \
      "$PY" benchmarks/fanout.py --clients 20,50 --size 64M --repeat 1 "${dir_args[@]}" 2>&1
    echo
  fi
  echo "All benchmarks took $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s."
} | tee "$OUT"
