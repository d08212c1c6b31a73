#!/usr/bin/env bash
# On the GPU machine (device tool): the CUDA checks of the newest kernels, where the batched engine's time goes
# under closed-loop load (scripts/engine_profile.py) for Turbo, and the vocoder-run A/B. Results in $OUT.
set -uo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
[ -f /tmp/ckt/conds.pt ] || timeout 200 python3 -m cadence.cli checkpoint random /tmp/ckt --family turbo >/dev/null
for phase in ${PHASES:-tests profile vocoder}; do
  echo "== $phase $(date +%T)"
  case $phase in
    tests) timeout 200 python3 -m pytest ${GPU_TESTS:-tests/gpu/test_sampling_kernel_cuda.py tests/gpu/test_alignment_kernels_cuda.py \
             tests/gpu/test_vocoder_chunks_cuda.py} -q -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1; tail -5 "$OUT/pytest_gpu.log" ;;
    profile) timeout ${PROFILE_T:-300} python3 scripts/engine_profile.py /tmp/ckt $OUT/engine_profile_turbo.json \
             ${CLIENTS:-64} ${REQUESTS:-128} ${TOKENS:-300} 2>&1 | quiet | tail -20 ;;
    agree) timeout 100 python3 scripts/filter_token_agreement.py 4096 2>&1 | quiet | tail -8 ;;
    vocoder) timeout 150 python3 scripts/vocoder_runs_ab.py 2>&1 | quiet | tail -15 ;;
  esac
done
