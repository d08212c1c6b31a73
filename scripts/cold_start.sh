#!/usr/bin/env bash
# On a GPU machine: seconds from starting `cadence serve` to /health answering ready, STARTS times (2) over one
# full-size random checkpoint of FAMILY (english), the server's default settings (watermark on). Prints one line
# per start, with the server's own start-up timeline (/health's `startup`); the first start after the checkpoint is written finds its files in the page cache, as a restart does.
# CK: the checkpoint directory (written there if missing). FIRST=N: once ready, N clients each send one 300-token mp3
# request, in two rounds back to back (round 1 the moment it said ready, round 2 as round 1 ends), p50 latency of each,
# and the engine's busy seconds per stage after each round (/metrics).
# PROFILE="1 3": py-spy samples those starts, every thread, from spawn to stop ($OUT/prof_start_N.txt, raw folded).
# TRITON_CLEAR="3": Triton's kernel cache is emptied before those starts (what a fresh machine's start compiles).
# WARM_AT=N: on start N, a third round once every graph is captured (the steady state the first rounds compare with).
# LATE="2 4": those starts skip `cadence.early_start` (the helpers start with the app): its A/B in one run.
# Each start's server log: $OUT/server_start_N.log.
set -uo pipefail
source scripts/gpu_env.sh
fam=${FAMILY:-english}; ck=${CK:-/tmp/ck_$fam}
[ -f $ck/conds.pt ] || python3 -m cadence.cli checkpoint random $ck --family $fam > /dev/null 2>&1 || exit 1
for i in $(seq ${STARTS:-2}); do
  # the cache `cadence` compiles its Triton kernels into (cadence/cache_dir.py), and Triton's own default
  [[ " ${TRITON_CLEAR:-} " == *" $i "* ]] && rm -rf "${TRITON_CACHE_DIR:-$(python3 -c 'from cadence.cache_dir import cache_dir; print(cache_dir() / "triton")')}" ~/.triton/cache && echo "  (Triton cache emptied)"
  python3 - "$ck" "$i" "${FIRST:-0}" "${PROFILE:-}" "${WARM_AT:-0}" <<'PY'
import os, re, subprocess, sys, time, urllib.request, json
t0 = time.perf_counter()
out = os.environ.get("OUT", "/tmp/out")
# LATE="2": on those starts the helper processes start with the app, as before early_start (the A/B)
late = sys.argv[2] in os.environ.get("LATE", "").split()
command = ["-c", "import sys; from cadence import cli, early_start; early_start.start = lambda argv: None; "
           "sys.exit(cli.main(sys.argv[1:]))"] if late else ["-m", "cadence.cli"]
p = subprocess.Popen([sys.executable, *command, "serve", "--model", sys.argv[1], "--port", "8123"],
                     stdout=open(f"{out}/server_start_{sys.argv[2]}.log", "w"), stderr=subprocess.STDOUT)
spy = None
if sys.argv[2] in sys.argv[4].split():
    spy = subprocess.Popen(["/tmp/site/bin/py-spy", "record", "-p", str(p.pid), "-r", "100", "--threads", "-f", "raw",
                            "--nonblocking", "-o", f"{out}/prof_start_{sys.argv[2]}.txt"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def busy():
    text = urllib.request.urlopen("http://127.0.0.1:8123/metrics", timeout=5).read().decode()
    return " ".join(f"{m[0]} {float(m[1]):.2f}" for m in
                    re.findall(r'cadence_engine_busy_seconds\{stage="(\w+)"\} (\S+)', text))
status, marks = None, {}
while status != "ready" and time.perf_counter() - t0 < 120 and p.poll() is None:
    try:
        health = json.load(urllib.request.urlopen("http://127.0.0.1:8123/health", timeout=1))
        status, marks = health["status"], health.get("startup", {})
    except Exception:
        pass
    time.sleep(0.05)
ready = time.perf_counter() - t0
first = int(sys.argv[3])
if status == "ready" and first:
    import statistics, threading
    body = json.dumps({"model": "tts-1", "input": "The first requests after start-up, sent the moment it said ready.",
                       "voice": "default", "response_format": "mp3", "max_new_tokens": 300, "seed": 1}).encode()
    rounds = (1, 2, "warm") if sys.argv[2] == sys.argv[5] else (1, 2)
    for rnd in rounds:
        while rnd == "warm" and json.load(urllib.request.urlopen("http://127.0.0.1:8123/health")).get("warming", 0):
            time.sleep(0.5)  # the steady state: every graph captured
        lat = []
        def one():
            t = time.perf_counter()
            req = urllib.request.Request("http://127.0.0.1:8123/v1/audio/speech", data=body,
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=120).read()
            lat.append(time.perf_counter() - t)
        threads = [threading.Thread(target=one) for _ in range(first)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print(f"  round {rnd}: {len(lat)}/{first} answered, latency p50 {statistics.median(lat):.2f} s, "
              f"max {max(lat):.2f} s; engine busy s: {busy()}", flush=True)
t1 = time.perf_counter()
p.terminate()
try:
    p.wait(60)
except subprocess.TimeoutExpired:
    p.kill(); p.wait()
if spy:
    spy.wait(30)
print(f"start {sys.argv[2]}{' (helpers started late)' if late else ''}: {status} after {ready:.2f} s; stopped {time.perf_counter() - t1:.2f} s after SIGTERM "
      f"(exit {p.returncode}); the server's phases, seconds after its start: "
      + ", ".join(f"{k} {v}" for k, v in marks.items()), flush=True)
PY
done
