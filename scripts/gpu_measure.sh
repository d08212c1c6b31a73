#!/usr/bin/env bash
# On the GPU machine, in one device call: the benches of the open issues, each under its own time limit so one
# slow phase cannot eat the others' figures; every JSON line is printed as it comes. Results land in $OUT.
# PHASES (default "stream"): any of stream serve serve_compiled gputest1 soak plans planruns gputests probe probe_old s3probe t3probe compileprobe soak_start soak_wait hang.  SOAK_S: soak seconds (default
# 540 for soak, 600 for soak_start). A device call runs at most 600 s, so a 10-minute soak spans two calls:
# soak_start runs it detached (setsid: it outlives the call) and waits WAIT_S (default 520) printing progress;
# soak_wait, the next call on the still-warm machine, waits for its end and brings back its JSON and log.
set -uo pipefail
[ -f /tmp/site/.ok ] || { python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  .whl_srv/*.whl >/dev/null 2>&1 && touch /tmp/site/.ok; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -f /tmp/ck/s3gen.safetensors ] || python3 -c "from cadence.random_checkpoint import make_random_checkpoint as m; m('/tmp/ck', seed=0)" || exit 1
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
for phase in ${PHASES:-stream}; do
  echo "== $phase $(date +%T)"
  case $phase in
    stream) timeout ${STREAM_T:-450} python3 -m cadence.cli bench --stream --model /tmp/ck --device cuda --concurrency ${STREAM_LEVELS:-1,8,16} \
              --words 10000 --json "$OUT/stream.json" --md "$OUT/stream.md" 2>&1 | tee "$OUT/stream.log" | quiet ;;
    serve|serve_compiled)  # serve_compiled: the server with --compile
            tag=${phase#serve}; flags=; [ -n "$tag" ] && flags=--compile
            timeout ${SERVE_T:-300} python3 -m cadence.cli bench serve --model /tmp/ck --device cuda --concurrency ${SERVE_LEVELS:-8,32} \
              --requests-per-client ${REQS:-2} --level-timeout-s ${LEVEL_T:-90} --server-log "$OUT/server$tag.log" $flags \
              --json "$OUT/serve$tag.json" --md "$OUT/serve$tag.md" 2>&1 | quiet
            pkill -f "cadence.cli serve" ;;
    gputest1) timeout ${TESTS_T:-200} python3 -m pytest ${TEST_FILES:-tests/gpu} -q -p no:cacheprovider 2>&1 | tail -15 ;;
    soak)   timeout $(( ${SOAK_S:-540} + 120 )) python3 -m cadence.cli bench soak --model /tmp/ck --device cuda \
              --clients 16 --seconds "${SOAK_S:-540}" --json "$OUT/soak.json" 2>&1 | quiet ;;
    soak_start)
            mkdir -p /tmp/soak; rm -f /tmp/soak/*
            setsid nohup sh -c "python3 -m cadence.cli bench soak --model /tmp/ck --device cuda --clients 16 \
              --seconds ${SOAK_S:-600} --json /tmp/soak/soak.json > /tmp/soak/log 2>&1; echo \$? > /tmp/soak/rc" \
              >/dev/null 2>&1 < /dev/null &
            for i in $(seq 1 $(( ${WAIT_S:-520} / 20 ))); do sleep 20; [ -f /tmp/soak/rc ] && break
              echo "$(date +%T) soak running"; done
            cp /tmp/soak/* "$OUT"/ 2>/dev/null ;;
    soak_wait)
            for i in $(seq 1 $(( ${WAIT_S:-520} / 10 ))); do [ -f /tmp/soak/rc ] && break; sleep 10; done
            echo "rc $(cat /tmp/soak/rc 2>/dev/null)"; quiet < /tmp/soak/log | tail -40; cp /tmp/soak/* "$OUT"/ ;;
    hang)   for v in ${HANG_VARIANTS:-overlap overlap-normal overlap-eager}; do  # scripts/hang_repro.py, each alone
              timeout 200 python3 scripts/hang_repro.py /tmp/ck "$v" 32 90 30 2>&1 | tee "$OUT/hang_$v.log" | quiet | tail -30; done ;;
    gputests) timeout ${TESTS_T:-200} python3 -m pytest tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log" | tail -15 ;;
    planruns)  # one process per plan (a plan measured after others inherits their cached workspaces)
            for p in ${PLAN_NAMES:-offload int8 bf16-lowmem}; do
              timeout ${PLAN_T:-200} python3 -m cadence.cli bench --memory-plan "$p" --model /tmp/ck --device cuda \
                --repeats 2 --consecutive ${CONSECUTIVE:-200} --json "$OUT/plan_$p.json" --md "$OUT/plan_$p.md" 2>&1 | quiet
              python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['cadence']; print(sys.argv[2], 'long', c['long']['rtf'], c['long']['peak_allocated_mb'], 'short', c['short']['rtf'], c['short']['peak_allocated_mb'], 'consecutive', c.get('consecutive'))" "$OUT/plan_$p.json" "$p"
            done ;;
    probe)  timeout ${PROBE_T:-240} python3 scripts/ttfa_probe.py /tmp/ck ${PROBE_LEVELS:-1,8,16} "$OUT/ttfa_probe.json" 2>&1 | quiet ;;
    probe_old) timeout ${PROBE_T:-240} python3 scripts/ttfa_probe.py /tmp/ck ${PROBE_LEVELS:-1,8,16} "$OUT/ttfa_probe_old.json" old 2>&1 | quiet ;;
    s3probe) timeout ${PROBE_T:-240} python3 scripts/s3gen_batch_probe.py /tmp/ck ${S3_SIZES:-4,8,16} "$OUT/s3gen_batch_probe.json" 2>&1 | quiet ;;
    t3probe) timeout ${PROBE_T:-240} python3 scripts/t3_attention_probe.py /tmp/ck "$OUT/t3_attention_probe.json" 2>&1 | quiet ;;
    compileprobe) timeout ${PROBE_T:-400} python3 scripts/s3gen_compile_probe.py /tmp/ck "$OUT/s3gen_compile_probe.json" 2>&1 | quiet ;;
    plans)  timeout 300 python3 -m cadence.cli bench --plans bf16,int8,offload --model /tmp/ck --device cuda \
              --json "$OUT/plans.json" --md "$OUT/plans.md" 2>&1 | quiet ;;
  esac
done
