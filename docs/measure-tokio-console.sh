#!/usr/bin/env bash
# What it is for: measures what `--tokio-console` costs the daemon under the
# synthetic load: CPU (utime+stime from /proc/PID/stat over a window) and
# resident memory (VmRSS), without and with the console layer, each in a
# fresh temporary home on an ephemeral port. Prints one line per run.
#
# What it must not do: touch any home but the temporary ones it creates,
# leave a daemon running, or run in CI (it takes minutes; run it by hand on
# an otherwise idle machine after `cargo build --release -p system -p math-plugin`).
#
# Usage: docs/measure-tokio-console.sh [JOBS] [WINDOW_SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${1:-10000}
WINDOW=${2:-10}
ROUNDS=${3:-3}
BIN=${BIN:-target/release/system}
HZ=$(getconf CLK_TCK)

[ -x "$BIN" ] || { echo "build first: cargo build --release -p system -p math-plugin" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }  # utime + stime (comm has no spaces here)
jobs_total() { curl -fsS "$1/api/load" | sed 's/.*"jobs_total":\([0-9]*\).*/\1/'; }
rss_mb() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

run() { # $1 = label, rest = extra `start` arguments
  local label=$1; shift
  local home; home=$(mktemp -d)
  local said pid url
  said=$("$BIN" --home "$home" start --http 127.0.0.1:0 "$@")
  pid=$(sed -n 's/.*(pid \([0-9]*\)).*/\1/p' <<<"$said")
  url=$(grep -o 'http://[^ ]*' <<<"$said")
  local idle_rss; idle_rss=$(rss_mb "$pid")
  curl -fsS -X POST "$url/api/load" -H 'Content-Type: application/json' -d "{\"jobs\":$JOBS}" >/dev/null
  # Wait (at most 60 s) until every worker runs, then 5 s more to settle.
  for _ in $(seq 600); do
    curl -fsS "$url/api/load" | grep -q "\"workers\":$JOBS[,}]" && break
    sleep 0.1
  done
  sleep 5
  local t0 t1 j0 j1
  j0=$(jobs_total "$url"); t0=$(cpu_ticks "$pid")
  sleep "$WINDOW"
  t1=$(cpu_ticks "$pid"); j1=$(jobs_total "$url")
  local rss; rss=$(rss_mb "$pid")
  awk -v l="$label" -v d=$((t1 - t0)) -v hz="$HZ" -v w="$WINDOW" -v r="$rss" -v i="$idle_rss" -v n=$((j1 - j0)) \
    'BEGIN { printf "%-16s cpu %5.1f %% of one core   rss %6.1f MB (idle %5.1f MB)   %7.0f jobs/s\n", l, 100 * d / hz / w, r, i, n / w }'
  "$BIN" --home "$home" stop >/dev/null
  rm -rf "$home"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  run "off"
  run "--tokio-console" --tokio-console "127.0.0.1:$(free_port)"
done
