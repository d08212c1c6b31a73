#!/usr/bin/env bash
# On the GPU machine (device tool): `cadence bench serve` runs through the OpenAI client, watermark on, for either
# family. RUNS: space-separated FAMILY:MODES:LEVELS:FORMAT:WATERMARK_DEVICE:REQUESTS_PER_CLIENT, e.g.
# "english:one-piece:32,64:mp3:cpu:3 turbo:one-piece:16,64:mp3:cuda:2". TOKENS: each request's max_new_tokens
# (300). COLD: clients of the first-traffic probe (8; 0 skips it). GPU_TESTS: test files to run first. BENCH: "turbo" or "english" for the offline bench with the reference
# side by side (watermark on, on WM_DEVICE). PROFILE="LEVEL:SECONDS": py-spy samples each run's server for SECONDS,
# from 2 s after the level of LEVEL clients has finished (so during the next level), once per PROFILE_KINDS ("all gil":
# every thread, then only the thread holding the GIL; py-spy's wheel in .whl_srv). CONC: space-separated FAMILY:LEVELS, the batched engine alone (`bench --concurrency`, the family's
# checkpoint, 300-token requests). STREAM: families whose streaming latency to measure (`bench --stream`).
# FIRST: space-separated FAMILY:PLANNED_SHARE[:MODE], the first requests after start-up on the engine alone
# (scripts/first_burst.py: 8 clients x 2 requests of TOKENS tokens, one-piece or streamed, the graph captures
# meanwhile), run first.
# Results in $OUT: one JSON per run, the logs (and profiles) in logs.tgz.
set -uo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
mkdir -p /tmp/logs
# only the checkpoints the runs need
ckpt() { case $1 in turbo) echo /tmp/ckt ;; multilingual) echo /tmp/ckm ;; *) echo /tmp/cke ;; esac; }
for fam in english turbo multilingual; do
  if [[ "${RUNS:-} ${BENCH:-} ${CONC:-} ${STREAM:-} ${FIRST:-}" == *$fam* ]] && [ ! -f "$(ckpt $fam)/conds.pt" ]; then
    timeout 300 python3 -m cadence.cli checkpoint random "$(ckpt $fam)" --family $fam || exit 1; fi
done
if [ -n "${GPU_TESTS:-}" ]; then
  timeout ${TESTS_T:-200} python3 -m pytest $GPU_TESTS -q -p no:cacheprovider > /tmp/logs/pytest_gpu.log 2>&1
  tail -6 /tmp/logs/pytest_gpu.log
fi
for run in ${FIRST:-}; do
  IFS=: read -r fam share mode <<< "$run"
  mode=${mode:-one-piece}; tag=${fam}_share-${share}_$mode
  echo "== first burst $tag $(date +%T)"
  timeout ${FIRST_T:-200} python3 scripts/first_burst.py "$(ckpt $fam)" "$OUT/first_burst_$tag.json" 8 2 \
    ${TOKENS:-300} "$share" "$mode" > /tmp/logs/first_$tag.log 2>&1
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.pop('events'); print(json.dumps(d))" \
    "$OUT/first_burst_$tag.json" 2>/dev/null || tail -5 /tmp/logs/first_$tag.log
done
for run in ${RUNS:-}; do
  IFS=: read -r fam modes levels fmt wmdev rpc <<< "$run"
  ck=$(ckpt "$fam")
  tag=${fam}_${modes}_${levels//,/-}_${fmt}_wm-${wmdev}
  echo "== $tag $(date +%T)"
  if [ -n "${PROFILE:-}" ]; then
    ( IFS=: read -r after secs <<< "$PROFILE"
      for _ in $(seq 1200); do grep -q "\"concurrency\": $after," /tmp/logs/bench_$tag.log 2>/dev/null && break; sleep 0.5; done
      sleep 2
      pid=$(pgrep -f "cadence.cli serve" | head -1)
      for kind in ${PROFILE_KINDS:-all gil}; do  # every thread, or only the thread holding the GIL
        flag=$([ "$kind" = gil ] && echo --gil)
        [ -n "$pid" ] && /tmp/site/bin/py-spy record -p "$pid" -d "$secs" -r 200 --threads $flag --nonblocking -f raw \
          -o /tmp/logs/prof_${kind}_$tag.txt >> /tmp/logs/prof_$tag.log 2>&1
      done ) > /dev/null 2>&1 &
  fi
  timeout ${SERVE_T:-280} python3 -m cadence.cli bench serve --model $ck --device cuda --watermark \
    --watermark-device "$wmdev" --concurrency "$levels" --modes "$modes" --format "$fmt" --requests-per-client "$rpc" \
    --request-tokens ${TOKENS:-300} --cold-probe ${COLD:-8} --level-timeout-s ${LEVEL_T:-120} --server-log /tmp/logs/server_$tag.log \
    --json "$OUT/serve_$tag.json" --md /tmp/logs/serve_$tag.md 2>&1 | tee /tmp/logs/bench_$tag.log | quiet | tail -12
  cat /tmp/logs/serve_$tag.md 2>/dev/null
  pkill -f "cadence.cli serve"
done
for fam in ${BENCH:-}; do
  ck=$(ckpt "$fam")
  echo "== bench $fam wm-${WM_DEVICE:-cpu} $(date +%T)"
  timeout ${BENCH_T:-300} python3 -m cadence.cli bench --family $fam --model $ck --device cuda --reference --watermark \
    --watermark-device ${WM_DEVICE:-cpu} --repeats ${REPEATS:-3} --json "$OUT/bench_${fam}_wm-${WM_DEVICE:-cpu}.json" \
    --md /tmp/logs/bench_$fam.md 2>&1 | tee /tmp/logs/bench_$fam.log | quiet | tail -30
done
for run in ${CONC:-}; do
  IFS=: read -r fam levels <<< "$run"
  echo "== concurrency $fam $levels $(date +%T)"
  timeout ${CONC_T:-300} python3 -m cadence.cli bench --family $fam --model "$(ckpt $fam)" --device cuda --watermark \
    --concurrency "$levels" --json "$OUT/concurrency_${fam}_${levels//,/-}.json" --md /tmp/logs/conc_$fam.md 2>&1 \
    | tee /tmp/logs/conc_$fam.log | quiet | tail -4
  cat /tmp/logs/conc_$fam.md 2>/dev/null
done
for fam in ${STREAM:-}; do
  echo "== stream $fam $(date +%T)"
  timeout ${STREAM_T:-300} python3 -m cadence.cli bench --family $fam --model "$(ckpt $fam)" --device cuda --watermark \
    --stream --words ${WORDS:-2000} --json "$OUT/stream_${fam}.json" --md /tmp/logs/stream_$fam.md 2>&1 | tee /tmp/logs/stream_$fam.log \
    | quiet | tail -4
  cat /tmp/logs/stream_$fam.md 2>/dev/null
done
tar czf "$OUT/logs.tgz" -C /tmp logs
