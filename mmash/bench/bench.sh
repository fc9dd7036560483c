#!/usr/bin/env bash
# mmash's scrape benchmark, beside prometheus_client's multiprocess mode.
#
#   mmash/bench/bench.sh [PROCS] [THREADS]    default 1000 processes x 1 thread
#
# Starts PROCS real writer processes (THREADS files each, 50 fields a file:
# 40 counters, 8 gauges, 2 timers), serves them with a release mmash on
# loopback, and times GET /metrics and GET /stats/bench.c00?aggr=sum over
# kept-alive connections (each request samples every file again; files stay
# mapped between requests and only changed values are re-read).
# Then, in a venv it makes, builds the same shape for prometheus_client
# (PROCS x THREADS fake processes x 50 metrics in multiprocess files) and
# times MultiProcessCollector + generate_latest, in process, no HTTP.
set -euo pipefail
cd "$(dirname "$0")/../.."
PROCS=${1:-1000}
THREADS=${2:-1}
N=${N:-200}
cargo build -q --release -p mmash --bin mmash --example fleet
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 700 "$work/stats"
ulimit -n 65536 2>/dev/null || true

mkfifo "$work/fleet.in"
"$bin/examples/fleet" "$work/stats" "$PROCS" "$THREADS" < "$work/fleet.in" > "$work/fleet.out" &
exec 3> "$work/fleet.in"
until grep -q ready "$work/fleet.out" 2>/dev/null; do sleep 0.2; done
files=$(ls "$work/stats" | wc -l)

"$bin/mmash" "$work/stats" --listen 127.0.0.1:0 2> "$work/mmash.log" &
MMASH=$!
until grep -q "listening on" "$work/mmash.log" 2>/dev/null; do sleep 0.1; done
addr=$(sed -n 's|.*listening on http://\(.*\)/|\1|p' "$work/mmash.log")

python3 - "$addr" "$MMASH" "$N" "$files" "$work/median" <<'PY'
import http.client, statistics, sys, time
addr, pid, n, files, median_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host, port = addr.rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
def timed(path, n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); c.request("GET", path); r = c.getresponse(); body = r.read()
        out.append((time.perf_counter() - t) * 1e3)
        assert r.status == 200, (path, r.status, body[:200])
    return sorted(out), len(body)
timed("/metrics", 5)
m, size = timed("/metrics", n)
s, _ = timed("/stats/bench.c00?aggr=sum", n)
status = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "RssAnon", "RssFile"))}
rss, anon, mapped = status["VmRSS"], status["RssAnon"], status["RssFile"]
p99 = lambda v: v[min(len(v) - 1, int(len(v) * 0.99))]
print(f"mmash: {files} files x 50 fields")
print(f"  GET /metrics                 median {statistics.median(m):.2f} ms  p99 {p99(m):.2f} ms  ({size} bytes, {n} requests)")
print(f"  GET /stats/bench.c00?aggr=sum median {statistics.median(s):.2f} ms  p99 {p99(s):.2f} ms")
print(f"  mmash resident memory        {int(rss) / 1024:.1f} MiB ({int(anon) / 1024:.1f} MiB private, {int(mapped) / 1024:.1f} MiB of mapped stats files)")
open(median_file, "w").write(str(statistics.median(m)))
PY
exec 3>&-
kill $MMASH; wait $MMASH 2>/dev/null || true

# The peer: prometheus_client's multiprocess mode, same shape.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q prometheus_client
mkdir "$work/prom"
PROMETHEUS_MULTIPROC_DIR="$work/prom" "$work/venv/bin/python" - "$((PROCS * THREADS))" "$N" "$work/median" <<'PY'
import statistics, sys, time
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
procs, n, median_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for pid in range(procs):
    values.ValueClass = values.MultiProcessValue(lambda pid=pid: 100000 + pid)
    reg = CollectorRegistry()
    for i in range(40):
        Counter(f"bench_c{i:02}", "A benchmark counter.", registry=reg).inc(i * 10 + 1)
    for i in range(8):
        Gauge(f"bench_g{i}", "A benchmark gauge.", multiprocess_mode="livesum", registry=reg).set(i)
    for i in range(2):
        h = Histogram(f"bench_t{i}_seconds", "A benchmark timer.", registry=reg)
        for k in range(1, 21):
            h.observe((k * 37 + i) / 1e6)
reg = CollectorRegistry()
MultiProcessCollector(reg)
generate_latest(reg)
out = []
runs = max(5, min(n, 30))
for _ in range(runs):
    t = time.perf_counter(); page = generate_latest(reg); out.append((time.perf_counter() - t) * 1e3)
out.sort()
med = statistics.median(out)
ours = float(open(median_file).read())
print(f"prometheus_client multiprocess: {procs} processes x 50 metrics")
print(f"  MultiProcessCollector + generate_latest  median {med:.2f} ms  p99 {out[-1]:.2f} ms  ({len(page)} bytes, {runs} runs)")
print(f"ratio: mmash /metrics is {med / ours:.1f}x faster than the peer")
PY
