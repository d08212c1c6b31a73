#!/usr/bin/env bash
# On the GPU machine: install the reference from carried wheels, run the parity suite on CUDA in fp32 and the
# GPU tests, then a side-by-side timing. Results land in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -c "from cadence.random_checkpoint import make_random_checkpoint as m; m('/tmp/ck', seed=0)" || exit 1
CADENCE_PARITY_CKPT=/tmp/ck CADENCE_PARITY_DEVICE=cuda CADENCE_PARITY_REPORT=$OUT/parity_cuda.json \
  CADENCE_PARITY_T3_STEPS=${T3_STEPS:-40} CADENCE_PARITY_S3_TOKENS=${S3_TOKENS:-100} \
  python3 -m pytest tests/parity tests/gpu -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25
python3 -c "from cadence.random_checkpoint import synthetic_voice as s; import soundfile as sf; sf.write('/tmp/ref.wav', s(seconds=9.98), 24000, subtype='PCM_16')"
python3 scripts/quick_timing.py /tmp/ck /tmp/ref.wav "$OUT/timing.json" 2>&1 | grep -v -i warn | tail -30
