#!/usr/bin/env bash
# Fidelity of the simulator: the same migration simulated (`precopy sim`) and run for
# real as two processes over a veth pair between two network namespaces shaped by
# tc tbf (scripts/shaped-link.sh), printed side by side; fails when total time or
# bytes on the wire differ by more than BOUND percent (default 15).
#
#   scripts/sim-fidelity.sh [MEMORY [WORKLOAD [BOUND [options for both sides...]]]]
#   scripts/sim-fidelity.sh 512M continuous:rate=20k,set=128M
#   scripts/sim-fidelity.sh 512M continuous:rate=20k,set=128M 15 --compression off
#
# Needs root, ip and tc, and a release build; exits 2 with SKIP otherwise (optional
# in CI: the real run takes tens of seconds at 1 Gbit/s).
set -euo pipefail
cd "$(dirname "$0")/.."
memory=${1:-512M}
workload=${2:-continuous:rate=20k,set=128M}
bound=${3:-15}
shift $(( $# < 3 ? $# : 3 ))
bin=target/release/precopy
[ -x "$bin" ] || { echo "SKIP: build first: cargo build --release" >&2; exit 2; }
common=(--memory "$memory" --workload "$workload" --streams 2 --json "$@")
sim=$("$bin" sim "${common[@]}" --link 1gbe --latency-us 50 --cpu calibrate | grep '"kind":"summary"')
real_out=$(scripts/shaped-link.sh 1gbit "${common[@]}" --downtime-ms 300) || {
  status=$?
  [ "$status" = 2 ] && exit 2
  echo "$real_out"
  echo "the real migration failed (exit $status)" >&2
  exit 1
}
real=$(echo "$real_out" | grep '"kind":"summary"' | head -1)
python3 - "$sim" "$real" "$bound" <<'PY'
import json, sys
sim, real, bound = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
rows = [("rounds", "rounds", 1), ("total s", "total_ms", 1e-3),
        ("downtime ms", "downtime_ms", 1), ("wire MB", "wire_bytes", 1e-6)]
print(f"{'':14} {'simulated':>12} {'real':>12} {'sim/real':>9}")
bad = []
for name, key, scale in rows:
    s, r = sim.get(key), real.get(key)
    if s is None or r is None:
        print(f"{name:14} {s!s:>12} {r!s:>12}")
        continue
    s, r = s * scale, r * scale
    ratio = s / r if r else float("nan")
    print(f"{name:14} {s:>12.3f} {r:>12.3f} {ratio:>9.3f}")
    if key in ("total_ms", "wire_bytes") and abs(ratio - 1) * 100 > bound:
        bad.append(f"{name} differs by {abs(ratio - 1) * 100:.0f}% (bound {bound:.0f}%)")
print("verified: simulated", sim.get("verified"), "real", real.get("verified"))
print("(the simulated link carries at most %.1f MB/s of stream bytes; a real run whose"
      " encoders are short of CPU, e.g. LZ4 on a machine busy with other work, is slower)"
      % (sim.get("link_bytes_per_sec", 0) * 1448 / 1538 / 1e6))
if bad:
    print("FIDELITY: " + "; ".join(bad))
    sys.exit(1)
print(f"fidelity: total time and bytes within {bound:.0f}%")
PY
