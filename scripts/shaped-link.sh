#!/usr/bin/env bash
# A two-process migration over a real link shaped by tc: a veth pair between two
# network namespaces, the source side limited by a token-bucket qdisc (tbf) to RATE.
#
#   scripts/shaped-link.sh RATE [precopy send options...]
#   scripts/shaped-link.sh 1gbit --downtime-ms 1000
#   scripts/shaped-link.sh 10gbit --compression off
#
# Needs root (ip netns, tc) and a release build (cargo build --release). Prints the
# source's rounds and both sides' summaries; removes the namespaces on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?usage: scripts/shaped-link.sh RATE [send options...]}
shift
bin=target/release/precopy
[ -x "$bin" ] || { echo "SKIP: build first: cargo build --release" >&2; exit 2; }
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "SKIP: needs root, ip and tc" >&2
  exit 2
fi
src=pcsrc$$ dst=pcdst$$
cleanup() { ip netns del "$src" 2>/dev/null || true; ip netns del "$dst" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$src"
ip netns add "$dst"
ip link add "v$src" type veth peer name "v$dst"
ip link set "v$src" netns "$src"
ip link set "v$dst" netns "$dst"
ip -n "$src" addr add 10.77.0.1/24 dev "v$src"
ip -n "$dst" addr add 10.77.0.2/24 dev "v$dst"
for ns in "$src" "$dst"; do ip -n "$ns" link set lo up; done
ip -n "$src" link set "v$src" up
ip -n "$dst" link set "v$dst" up
ip netns exec "$src" tc qdisc add dev "v$src" root tbf rate "$rate" burst 1mb latency 10ms
out=$(mktemp)
ip netns exec "$dst" "$bin" recv --listen 10.77.0.2:7000 --insecure >"$out" 2>&1 &
recv=$!
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
status=0
ip netns exec "$src" "$bin" send --connect 10.77.0.2:7000 "$@" || status=$?
wait "$recv" || status=$?
cat "$out"
rm -f "$out"
exit "$status"
