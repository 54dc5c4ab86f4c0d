#!/usr/bin/env bash
# A private Redis Cluster for the tests: 3 masters and 3 replicas on free ports
# (never 6379, the machine's shared Redis), in a temp dir, nothing persisted.
#
#   eval "$(.ci/redis-cluster.sh start)"   # exports TEST_REDIS_CLUSTER_URL and REDIS_CLUSTER_DIR
#   .ci/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"
#
# `start` prints only the export lines on stdout (progress goes to stderr) and
# writes the same lines to $REDIS_CLUSTER_DIR/env. `stop` shuts down exactly the
# servers whose pid files are in that dir, then removes it.
set -euo pipefail

NODES=6
# A node listens on P and on P + 10000 (the cluster bus), so P stays below 55536.
PORT_MIN=20000
PORT_SPAN=30000

log() { echo "redis-cluster: $*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port that is free, whose bus port is free, and that no node here took yet.
pick_port() {
  local port taken
  for _ in $(seq 1 200); do
    port=$((PORT_MIN + RANDOM % PORT_SPAN))
    taken=0
    for used in "${ports[@]}"; do
      if [ "$used" = "$port" ] || [ $((used + 10000)) = "$port" ] || [ "$used" = $((port + 10000)) ]; then taken=1; fi
    done
    if [ "$taken" = 0 ] && ! listening "$port" && ! listening $((port + 10000)); then
      echo "$port"
      return 0
    fi
  done
  log "no free port found"
  return 1
}

# Starts one node; 0 once it answers PING, 1 if it could not start (port taken).
start_node() {
  local port=$1 node=$dir/$1
  mkdir -p "$node"
  redis-server --port "$port" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$node/nodes.conf" \
    --cluster-node-timeout 5000 \
    --dir "$node" --save "" --appendonly no \
    --daemonize yes --pidfile "$node/redis.pid" --logfile "$node/redis.log" >&2 || return 1
  for _ in $(seq 1 50); do
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
    # A node that lost the race for its port exits; try another port.
    if [ -f "$node/redis.log" ] && grep -q 'Address already in use\|Failed listening' "$node/redis.log"; then
      rm -rf "$node"
      return 1
    fi
    sleep 0.1
  done
  return 1
}

# Every node says cluster_state:ok, and every replica's link to its master is up.
cluster_ready() {
  local port info
  for port in "${ports[@]}"; do
    info=$(redis-cli -p "$port" cluster info 2>/dev/null) || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    info=$(redis-cli -p "$port" info replication 2>/dev/null) || return 1
    if grep -q '^role:slave' <<<"$info"; then
      grep -q '^master_link_status:up' <<<"$info" || return 1
    fi
  done
  # All nodes agree on the slot map.
  redis-cli --cluster check "127.0.0.1:${ports[0]}" >/dev/null 2>&1
}

start() {
  command -v redis-server >/dev/null || { log "redis-server is not installed"; exit 1; }
  dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-cluster.XXXXXX")
  ports=()
  # Whatever fails below, leave no node running.
  ready=0
  trap '[ "$ready" = 1 ] || stop "$dir"' EXIT
  local port attempts=0
  while [ ${#ports[@]} -lt $NODES ]; do
    attempts=$((attempts + 1))
    [ $attempts -le 20 ] || { log "could not start $NODES nodes"; exit 1; }
    port=$(pick_port)
    if start_node "$port"; then
      ports+=("$port")
    else
      log "no node on port $port; trying another"
    fi
  done
  local addresses=()
  for port in "${ports[@]}"; do addresses+=("127.0.0.1:$port"); done
  log "creating a cluster of ${addresses[*]} in $dir"
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
    { cat "$dir/create.log" >&2; exit 1; }
  for _ in $(seq 1 300); do
    cluster_ready && break
    sleep 0.1
  done
  cluster_ready || { log "the cluster did not become ready within 30 s"; exit 1; }
  ready=1
  local urls=()
  for port in "${ports[@]}"; do urls+=("redis://127.0.0.1:$port"); done
  {
    echo "export REDIS_CLUSTER_DIR=$dir"
    echo "export TEST_REDIS_CLUSTER_URL=$(IFS=,; echo "${urls[*]}")"
  } >"$dir/env"
  log "ready: ${urls[*]}"
  cat "$dir/env"
}

stop() {
  local dir=${1:-${REDIS_CLUSTER_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir" ] || { log "no cluster dir to stop"; return 0; }
  local pidfile pid pids=()
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
  log "stopped ${#pids[@]} nodes"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop [dir]" >&2; exit 2 ;;
esac
