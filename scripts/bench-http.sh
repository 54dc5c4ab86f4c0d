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

healthz=(); whoami=(); bad=0
for i in $(seq 1 "$RUNS"); do
  read -r h hb < <(run "http://127.0.0.1:$PORT/healthz")
  read -r w wb < <(run "http://127.0.0.1:$PORT/v1/whoami" "X-API-Key: $credential")
  healthz+=("$h"); whoami+=("$w"); bad=$((bad + hb + wb))
  echo "run $i: /healthz $h req/s, /v1/whoami $w req/s" >&2
done

python3 - "$bad" "${healthz[*]}" "${whoami[*]}" <<'PY'
import statistics, sys
bad = int(sys.argv[1])
h = [float(x) for x in sys.argv[2].split()]
w = [float(x) for x in sys.argv[3].split()]
mh, mw = statistics.median(h), statistics.median(w)
print(f"/healthz   median {mh:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in h)}")
print(f"/v1/whoami median {mw:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in w)}")
print(f"ratio whoami/healthz: {mw / mh:.3f}   non-2xx responses: {bad}")
PY

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

plain=(); keyed=(); bad=0
for i in $(seq 1 "$RUNS"); do
  read -r p pb < <(run "http://127.0.0.1:$BENCH_PORT/plain")
  read -r k kb < <(run "http://127.0.0.1:$BENCH_PORT/keyed" "X-API-Key: $bench_credential")
  plain+=("$p"); keyed+=("$k"); bad=$((bad + pb + kb))
  echo "run $i: /plain $p req/s, /keyed $k req/s" >&2
done

python3 - "$bad" "${plain[*]}" "${keyed[*]}" <<'PY'
import statistics, sys
bad = int(sys.argv[1])
p = [float(x) for x in sys.argv[2].split()]
k = [float(x) for x in sys.argv[3].split()]
mp, mk = statistics.median(p), statistics.median(k)
print(f"/plain     median {mp:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in p)}")
print(f"/keyed     median {mk:>10.0f} req/s  runs {', '.join(f'{x:.0f}' for x in k)}")
print(f"ratio keyed/plain (the layer alone): {mk / mp:.3f}   non-2xx responses: {bad}")
PY
