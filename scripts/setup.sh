#!/usr/bin/env bash
# Sets up .venv for Cadence on a fresh machine. With --test, also the test tools and the reference package
# chatterbox-tts==0.1.7 that the parity tests compare against.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
"$PY" -m pip install -q --upgrade pip >/dev/null
# A CPU build of torch 2.13 where one is at hand; any torch >= 2.4 works (the GPU machine has 2.11).
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[watermark,server,test]"
# resemble-perth (the watermark network and weights) pins torch==2.6 and numpy<2: install it without deps.
"$PY" -m pip install -q --no-deps "resemble-perth==1.0.1"
PYTHON="$PY" bash scripts/install_torchaudio.sh  # Perth imports torchaudio's transforms
if [ "${1:-}" = "--test" ]; then
  PYTHON="$PY" bash scripts/install_reference.sh
  # Debian's chromium drives the playground test (playwright uses it; no browser download).
  if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "chromium not installed: the playground browser test will be skipped"
  fi
fi
