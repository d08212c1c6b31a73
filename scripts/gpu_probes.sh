#!/usr/bin/env bash
# On the GPU machine (device tool): the batched-stage probes (S3Gen batches, the T3 batched step) for Turbo and the
# original model, and the Turbo single-request step probe. Results in $OUT.
set -uo pipefail
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
quiet() { grep -v -i "warn\|deprecat\|^INFO\|^  "; }
[ -f /tmp/ckt/conds.pt ] || timeout 200 python3 -m cadence.cli checkpoint random /tmp/ckt --family turbo >/dev/null
[ -f /tmp/cke/conds.pt ] || timeout 200 python3 -m cadence.cli checkpoint random /tmp/cke >/dev/null
echo "== s3gen batch turbo $(date +%T)"; timeout 150 python3 scripts/s3gen_batch_ab.py /tmp/ckt $OUT/s3gen_batch_ab_turbo.json 64 3 2>&1 | quiet | tail -8
echo "== t3 batch turbo $(date +%T)"; timeout 120 python3 scripts/t3_batch_probe.py /tmp/ckt $OUT/t3_batch_probe_turbo.json 768 32 2>&1 | quiet | tail -40
echo "== turbo t3 probe $(date +%T)"; timeout 100 python3 scripts/turbo_t3_probe.py /tmp/ckt $OUT/turbo_t3_probe.json 2>&1 | quiet | grep -v "^{'name'" | tail -20
echo "== s3gen batch english $(date +%T)"; timeout 200 python3 scripts/s3gen_batch_ab.py /tmp/cke $OUT/s3gen_batch_ab_english.json 64 2 2>&1 | quiet | tail -8
echo "== t3 batch english $(date +%T)"; timeout 120 python3 scripts/t3_batch_probe.py /tmp/cke $OUT/t3_batch_probe_english.json 768 32 2>&1 | quiet | tail -40
