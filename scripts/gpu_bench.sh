#!/usr/bin/env bash
# On the GPU machine: reference wheels, a full-size random checkpoint, the CUDA parity + GPU tests, then
# `cadence bench --reference --fidelity`. Results land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ -f /tmp/ck/s3gen.safetensors ] || python3 -c "from cadence.random_checkpoint import make_random_checkpoint as m; m('/tmp/ck', seed=0)" || exit 1
if [ "${RUN_TESTS:-1}" = 1 ]; then
  CADENCE_PARITY_CKPT=/tmp/ck CADENCE_PARITY_DEVICE=cuda CADENCE_PARITY_REPORT=$OUT/parity_cuda.json \
    CADENCE_PARITY_T3_STEPS=40 CADENCE_PARITY_S3_TOKENS=100 \
    python3 -m pytest ${TESTS:-tests/parity tests/gpu} -q -p no:cacheprovider > "$OUT/pytest_cuda.log" 2>&1; tail -1 "$OUT/pytest_cuda.log"
fi
python3 -m cadence.cli bench --model /tmp/ck --device cuda ${BENCH_ARGS:---reference --fidelity} \
  --json "$OUT/bench.json" --md "$OUT/bench.md" 2>&1 | grep -v -i "warn\|deprecat\|pkg_resources\|^  "
