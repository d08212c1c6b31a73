#!/usr/bin/env bash
# On the GPU machine (device tool), Chatterbox Turbo: a full-size random Turbo checkpoint, then the PHASES asked
# for: the GPU tests, the T3 step probe, where a 30 s clip's peak memory goes, the offline bench side by side with the reference Turbo (watermark on),
# the compile and int8 plans, streaming first audio, the HTTP server under load, and the Turbo parity tests on
# CUDA. Wheels for what the machine lacks travel in .whl (see docs/benchmarks.md). Results in $OUT.
set -uo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
CK=/tmp/ckt
[ -f $CK/conds.pt ] || timeout 200 python3 -m cadence.cli checkpoint random $CK --family turbo || exit 1
for phase in ${PHASES:-tests probe bench int8 stream serve parity}; do
  echo "== $phase $(date +%T)"
  case $phase in
    bench) timeout ${BENCH_T:-300} python3 -m cadence.cli bench --family turbo --model $CK --device cuda --reference \
             --watermark --watermark-device ${WM_DEVICE:-cpu} --repeats ${REPEATS:-3} --json "$OUT/turbo_bench.json" --md "$OUT/turbo_bench.md" 2>&1 \
             | tee "$OUT/turbo_bench.log" | quiet | tail -40 ;;
    compile) timeout ${COMPILE_T:-300} python3 -m cadence.cli bench --family turbo --model $CK --device cuda --compile \
             --watermark --repeats 2 --json "$OUT/turbo_compile.json" --md "$OUT/turbo_compile.md" 2>&1 | quiet | tail -25 ;;
    probe) timeout ${PROBE_T:-200} python3 scripts/turbo_t3_probe.py $CK "$OUT/turbo_t3_probe.json" 2>&1 | quiet | tail -60 ;;
    memory) timeout ${MEMORY_T:-120} python3 scripts/memory_probe.py $CK ${MEMORY_TOKENS:-750} "$OUT/turbo_memory.json" 2>&1 \
             | quiet | tail -30 ;;
    int8)  timeout ${INT8_T:-150} python3 -m cadence.cli bench --family turbo --model $CK --device cuda --memory-plan int8 \
             --watermark --repeats 2 --json "$OUT/turbo_int8.json" --md "$OUT/turbo_int8.md" 2>&1 | quiet | tail -25 ;;
    tests) timeout ${TESTS_T:-300} python3 -m pytest ${GPU_TESTS:-tests/gpu/test_turbo_cuda.py tests/gpu/test_cuda.py \
             tests/gpu/test_engine_cuda.py tests/gpu/test_sampling_kernel_cuda.py tests/gpu/test_vocoder_chunks_cuda.py} -q -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1; tail -15 "$OUT/pytest_gpu.log" ;;
    stream) timeout ${STREAM_T:-240} python3 -m cadence.cli bench --stream --model $CK --device cuda --words ${WORDS:-2000} \
             --json "$OUT/turbo_stream.json" --md "$OUT/turbo_stream.md" 2>&1 | quiet | tail -25 ;;
    serve) timeout ${SERVE_T:-300} python3 -m cadence.cli bench serve --model $CK --device cuda --watermark \
             --watermark-device ${WM_DEVICE:-cpu} --concurrency ${LEVELS:-16,64} --modes ${MODES:-one-piece} \
             --format ${FORMAT:-mp3} --requests-per-client ${RPC:-2} --request-tokens ${TOKENS:-300} \
             --server-log "$OUT/turbo_server.log" \
             --json "$OUT/turbo_serve.json" --md "$OUT/turbo_serve.md" 2>&1 | quiet | tail -25 ;;
    parity) CADENCE_PARITY_DEVICE=cuda timeout ${PARITY_T:-200} python3 -m pytest tests/parity/test_turbo_parity.py \
             -q -s -p no:cacheprovider 2>&1 | tee "$OUT/turbo_parity_cuda.log" | grep -E "turbo |passed|failed|Error" ;;
  esac
done
