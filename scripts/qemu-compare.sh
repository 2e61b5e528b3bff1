#!/usr/bin/env bash
# precopy against QEMU on the same guest: boots kvm-demo's guest program (a multiboot
# image from `precopy kvm-image`) under QEMU/KVM, migrates it between two QEMU processes
# over loopback (max-bandwidth unlimited, downtime-limit 300 ms; also with xbzrle and
# with multifd on 2 channels), reads query-migrate, then runs `precopy kvm-demo` with the
# same memory, working set and rate, and prints both side by side.
#
#   [REPS=N] scripts/qemu-compare.sh [MEMORY] [WORKING_SET] [RATES...]   (default: 1G 256M 0 10k 50k;
#   REPS repeats the whole list N times, interleaving QEMU and precopy runs)
#
# Skips with a message where qemu-system-x86_64 is not installed (as root it installs
# Debian's qemu-system-x86 first) or /dev/kvm is missing. The QEMU guest boots through
# SeaBIOS, which under a nested KVM (kvm-pvm) takes about 10 s per boot.
set -euo pipefail
cd "$(dirname "$0")/.."
memory=${1:-1G}
set_size=${2:-256M}
shift $(( $# > 2 ? 2 : $# ))
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(0 10k 50k)

if ! command -v qemu-system-x86_64 >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing qemu-system-x86 (Debian) ..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null
  else
    echo "SKIP: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
    exit 0
  fi
fi
if [ ! -w /dev/kvm ]; then
  echo "SKIP: /dev/kvm is not available here"
  exit 0
fi
cargo build --release --quiet --features kvm --bin precopy
precopy=target/release/precopy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$precopy" "$work" "$memory" "$set_size" "${rates[@]}" <<'PY'
import json, os, socket, subprocess, sys, time

precopy, work, memory, set_size, rates = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
version = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]

class QMP:
    def __init__(self, path):
        for _ in range(400):
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"no QMP socket at {path}")
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")
    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n"); self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r: return r["return"]
            if "error" in r: raise RuntimeError(f"{name}: {r['error']}")
    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

def qemu(name, image, extra):
    sock = os.path.join(work, name + ".sock")
    p = subprocess.Popen(["qemu-system-x86_64", "-enable-kvm", "-m", memory, "-kernel", image,
                          "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot",
                          "-qmp", f"unix:{sock},server=on,wait=off"] + extra,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, QMP(sock)

def counter(q):
    # The counter page is at 1 MiB + 0x5000 in the image's layout.
    return int(q.hmp("xp /1gx 0x105000").split()[-1], 16)

def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)

def rate_value(text):
    return int(text[:-1]) * 1000 if text[-1] in "kK" else int(text)

set_pages = size_bytes(set_size) // 4096
reps = int(os.environ.get("REPS", "1"))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port

def qemu_case(rate, variant):
    image = os.path.join(work, f"guest-{rate}.img")
    subprocess.run([precopy, "kvm-image", "--memory", memory, "--working-set", set_size,
                    "--rate", rate, "--out", image], check=True)
    port = free_port()
    src, qs = qemu("src", image, [])
    dst, qd = qemu("dst", image, ["-incoming", f"tcp:127.0.0.1:{port}"])
    try:
        # Like kvm-demo: the guest covers its working set once before the migration
        # (counter >= set pages), so both sides start from the same memory contents.
        deadline = time.time() + 120 + set_pages / max(rate_value(rate), 1)
        while rate != "0" and counter(qs) < set_pages:
            if time.time() > deadline: raise RuntimeError("the QEMU guest never covered its working set")
            time.sleep(0.2)
        time.sleep(1)  # the rate settled
        before = counter(qs); t = time.time(); time.sleep(1)
        measured = (counter(qs) - before) / (time.time() - t)
        caps = []
        if variant == "xbzrle": caps.append({"capability": "xbzrle", "state": True})
        if variant == "multifd": caps.append({"capability": "multifd", "state": True})
        for q in (qs, qd):
            if caps: q.cmd("migrate-set-capabilities", capabilities=caps)
            params = {"max-bandwidth": 100 << 30, "downtime-limit": 300}
            if variant == "multifd": params["multifd-channels"] = 2
            q.cmd("migrate-set-parameters", **params)
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            info = qs.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"): break
            time.sleep(0.05)
        if info["status"] != "completed":
            raise RuntimeError(f"QEMU migration {info['status']}: {info.get('error-desc', '')}")
        ram = info.get("ram", {})
        # The guest continues on the destination.
        qd.cmd("query-status")
        c0 = counter(qd); time.sleep(0.3); continued = counter(qd) > c0 or rate == "0"
        return {"total_ms": info.get("total-time"), "downtime_ms": info.get("downtime"),
                "bytes": ram.get("transferred"), "rounds": ram.get("dirty-sync-count"),
                "rate": measured, "continued": continued}
    finally:
        for q, p in ((qs, src), (qd, dst)):
            try: q.cmd("quit")
            except Exception: pass
            try: p.wait(timeout=10)
            except Exception: p.kill()

def precopy_case(rate):
    out = subprocess.run([precopy, "kvm-demo", "--memory", memory, "--working-set", set_size,
                          "--rate", rate, "--json"], capture_output=True, text=True)
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    s = [l for l in lines if l.get("kind") == "summary"]
    if out.returncode != 0 or not s:
        raise RuntimeError(f"kvm-demo failed: {out.stderr.strip()}")
    s = s[0]
    k = ([l for l in lines if l.get("kind") == "kvm_summary"] or [{}])[0]
    return {"total_ms": s["total_ms"], "downtime_ms": s["downtime_ms"], "sent_ms": k.get("downtime_to_sent_ms"),
            "bytes": s["wire_bytes"],
            "rounds": s["rounds"], "mode": k.get("dirty_mode"), "continued": k.get("counter_continued")}

print(f"{version}; guest: {memory}, working set {set_size}; QEMU: max-bandwidth unlimited, downtime-limit 300 ms")
print("downtime ms: QEMU's until its last byte was sent; precopy's until the destination verified;")
print("to sent ms: both until the source's last byte was sent (QEMU's measure)")
print(f"{'case':<22} {'who':<16} {'total ms':>9} {'downtime ms':>12} {'to sent ms':>11} {'MB':>9} {'rounds':>7} {'guest pg/s':>11} {'continued':>9}")
for rate in [r for _ in range(reps) for r in rates]:
    for variant in ("default", "xbzrle", "multifd"):
        if variant != "default" and rate == "0":
            continue
        case = f"{rate} pages/s"
        try:
            r = qemu_case(rate, variant)
            print(f"{case:<22} {'qemu ' + variant:<16} {r['total_ms']:>9} {r['downtime_ms']:>12} {r['downtime_ms']:>11} "
                  f"{r['bytes'] / 1e6:>9.1f} {r['rounds']:>7} {r['rate']:>11.0f} {str(r['continued']):>9}", flush=True)
        except Exception as e:
            print(f"{case:<22} {'qemu ' + variant:<16} failed: {e}", flush=True)
    try:
        r = precopy_case(rate)
        print(f"{case:<22} {'precopy ' + str(r['mode']):<16} {r['total_ms']:>9} {r['downtime_ms']:>12} {str(r['sent_ms']):>11} "
              f"{r['bytes'] / 1e6:>9.1f} {r['rounds']:>7} {'':>11} {str(r['continued']):>9}", flush=True)
    except Exception as e:
        print(f"{case:<22} {'precopy':<16} failed: {e}", flush=True)
PY
