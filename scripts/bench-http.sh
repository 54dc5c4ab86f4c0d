#!/usr/bin/env bash
# End-to-end throughput over HTTP under wrk, release builds, RUNS runs of each
# path, alternately. Prints the medians, the ratios and any non-2xx.
#
#  1. the example server: /healthz (no authentication) against /v1/whoami
#     (ApiKeyAuthLayer, cache hit, a JSON answer);
#  2. examples/bench_server.rs: the same handler at /plain (no authentication)
#     and at /keyed (ApiKeyAuthLayer, cache hit), so that the ratio is the
#     layer's cost alone.
#
#   scripts/bench-http.sh            # 3 runs x 10 s each, wrk -t1 -c64
#   RUNS=5 DURATION=20s scripts/bench-http.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
DURATION="${DURATION:-10s}"
THREADS="${THREADS:-1}"
CONNECTIONS="${CONNECTIONS:-64}"
PORT="${PORT:-38080}"
BENCH_PORT="${BENCH_PORT:-38081}"

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi

cargo build --release --example server --example bench_server >&2

work=$(mktemp -d)
token="bench-admin-token-$(date +%s)"
(
  cd "$work"
  exec env BIND="127.0.0.1:$PORT" ADMIN_TOKEN="$token" API_KEY_PEPPER="bench-pepper-0123456789abcdef" \
    RUST_LOG=warn "$OLDPWD/target/release/examples/server" >"$work/server.log" 2>&1
) &
server=$!
bench_server=
trap 'kill -TERM $server $bench_server 2>/dev/null; wait $server $bench_server 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

account=$(cat /proc/sys/kernel/random/uuid)
created=$(curl -fsS -X POST "http://127.0.0.1:$PORT/v1/api-keys" \
  -H "Authorization: Bearer $token" -H "X-Account-Id: $account" \
  -H 'Content-Type: application/json' -d '{"title":"wrk"}')
credential=$(python3 -c 'import json,sys; k=json.load(sys.stdin); print(k["public_key"]+":"+k["secret_key"])' <<<"$created")
curl -fsS "http://127.0.0.1:$PORT/v1/whoami" -H "X-API-Key: $credential" >/dev/null

run() { # url [header] -> "requests/s non2xx"
  local out
  if [ $# -gt 1 ]; then
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -H "$2" "$1")
  else
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$1")
  fi
  local rps bad
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' <<<"$out")
  echo "$rps ${bad:-0}"
}

compare() { # name url name url credential label: the second URL is the keyed one
  local first=() second=() bad=0 i x xb y yb
  for i in $(seq 1 "$RUNS"); do
    read -r x xb < <(run "$2")
    read -r y yb < <(run "$4" "X-API-Key: $5")
    first+=("$x"); second+=("$y"); bad=$((bad + xb + yb))
    echo "run $i: $1 $x req/s, $3 $y req/s" >&2
  done
  python3 - "$bad" "${first[*]}" "${second[*]}" "$1" "$3" "$6" <<'PY'
import statistics, sys
bad = int(sys.argv[1])
a = [float(x) for x in sys.argv[2].split()]
b = [float(x) for x in sys.argv[3].split()]
name_a, name_b, label = sys.argv[4], sys.argv[5], sys.argv[6]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{name_a:<10} median {ma:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in a)}")
print(f"{name_b:<10} median {mb:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in b)}")
print(f"ratio {label}: {mb / ma:.3f}   non-2xx responses: {bad}")
PY
}

compare /healthz "http://127.0.0.1:$PORT/healthz" \
  /v1/whoami "http://127.0.0.1:$PORT/v1/whoami" "$credential" "whoami/healthz"

# 2. The same handler with and without the layer.
kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true
BIND="127.0.0.1:$BENCH_PORT" CREDENTIAL_FILE="$work/credential" \
  target/release/examples/bench_server >"$work/bench_server.log" 2>&1 &
bench_server=$!
for _ in $(seq 1 100); do
  [ -s "$work/credential" ] && curl -fsS "http://127.0.0.1:$BENCH_PORT/plain" >/dev/null 2>&1 && break
  sleep 0.1
done
bench_credential=$(cat "$work/credential")
curl -fsS "http://127.0.0.1:$BENCH_PORT/keyed" -H "X-API-Key: $bench_credential" >/dev/null

compare /plain "http://127.0.0.1:$BENCH_PORT/plain" \
  /keyed "http://127.0.0.1:$BENCH_PORT/keyed" "$bench_credential" "keyed/plain (the layer alone)"
