#!/bin/bash
# mmash at host scale without a descriptor per file:
#   P=300 T=100 mmash/bench/scale.sh     30,000 live files (300 processes x 100 threads)
# The writers (the fleet example) make P x T files; mmash then runs under
# ulimit -n 4096 and must count bench.c00 exactly; prints /metrics time,
# memory and open descriptors.
set -euo pipefail
P=${P:-300}; T=${T:-100}
cd "$(dirname "$0")/../.."
cargo build -q --release -p mmash --bin mmash --example fleet
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 700 "$work/stats"
mkfifo "$work/fleet.in"
"$bin/examples/fleet" "$work/stats" "$P" "$T" < "$work/fleet.in" > "$work/fleet.out" &
exec 3> "$work/fleet.in"
until grep -q ready "$work/fleet.out" 2>/dev/null; do sleep 0.5; done
echo "files: $(ls "$work/stats" | grep -c '\.mmstats$')"
( ulimit -n 4096; exec "$bin/mmash" "$work/stats" --listen 127.0.0.1:0 ) 2> "$work/mmash.log" &
MMASH=$!
until grep -q "listening on" "$work/mmash.log" 2>/dev/null; do sleep 0.2; done
addr=$(sed -n 's|.*listening on http://\(.*\)/|\1|p' "$work/mmash.log")
grep -i 'limit' "$work/mmash.log" || true
python3 - "$addr" "$MMASH" "$P" "$T" <<'PY'
import http.client, statistics, sys, time
addr, pid, P, T = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=600)
times = []
for i in range(6):
    t = time.perf_counter(); c.request("GET", "/metrics"); r = c.getresponse(); body = r.read().decode()
    times.append((time.perf_counter() - t) * 1e3)
total = sum(int(l.rsplit(" ", 1)[1]) for l in body.splitlines() if l.startswith("bench_c00_total{"))
expected = P * T * (T + 1) // 2
alive = [l for l in body.splitlines() if l.startswith('mmash_files{state="alive"}')]
st = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "VmHWM", "RssAnon"))}
fds = len(__import__("os").listdir(f"/proc/{pid}/fd"))
print(f"bench.c00 total {total}, expected {expected}, exact={total == expected}; {alive}")
print(f"/metrics first {times[0]:.0f} ms, then median {statistics.median(times[1:]):.0f} ms; VmRSS {int(st['VmRSS'])/1024:.0f} MiB, peak {int(st['VmHWM'])/1024:.0f} MiB, private {int(st['RssAnon'])/1024:.0f} MiB; open fds {fds}")
PY
