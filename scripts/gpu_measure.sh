#!/usr/bin/env bash
# On the GPU machine, in one device call: the benches of the open issues, each under its own time limit so one
# slow phase cannot eat the others' figures; every JSON line is printed as it comes. Results land in $OUT.
# PHASES (default "stream"): any of stream serve soak plans.  SOAK_S: soak seconds (default 540).
# A device call runs at most 600 s: stream (up to 450 s with its whole-context comparison) and soak each want
# a call of their own.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl .whl_srv/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -f /tmp/ck/s3gen.safetensors ] || python3 -c "from cadence.random_checkpoint import make_random_checkpoint as m; m('/tmp/ck', seed=0)" || exit 1
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
for phase in ${PHASES:-stream}; do
  echo "== $phase $(date +%T)"
  case $phase in
    stream) timeout 450 python3 -m cadence.cli bench --stream --model /tmp/ck --device cuda --concurrency 1,8,16 \
              --words 10000 --json "$OUT/stream.json" --md "$OUT/stream.md" 2>&1 | quiet ;;
    serve)  timeout 300 python3 -m cadence.cli bench serve --model /tmp/ck --device cuda --concurrency 8,32 \
              --requests-per-client 2 --json "$OUT/serve.json" --md "$OUT/serve.md" 2>&1 | quiet ;;
    soak)   timeout $(( ${SOAK_S:-540} + 120 )) python3 -m cadence.cli bench soak --model /tmp/ck --device cuda \
              --clients 16 --seconds "${SOAK_S:-540}" --json "$OUT/soak.json" 2>&1 | quiet ;;
    plans)  timeout 300 python3 -m cadence.cli bench --plans bf16,int8,offload --model /tmp/ck --device cuda \
              --json "$OUT/plans.json" --md "$OUT/plans.md" 2>&1 | quiet ;;
  esac
done
