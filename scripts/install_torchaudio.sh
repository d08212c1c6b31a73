#!/usr/bin/env bash
# torchaudio for Perth (the watermark: its spectrogram transforms) and the reference package, without its
# pinned deps, which would replace torch. PyPI's torchaudio is CUDA-linked; on a CPU torch its extension fails
# to load. Without the .so files it falls back to pure Python, which is all Perth and the reference use.
set -euo pipefail
PY=${PYTHON:-python}
"$PY" -m pip install -q --no-deps "torchaudio==2.11.0"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  site=$("$PY" -c "import os, torchaudio.version as v; print(os.path.dirname(v.__file__))" 2>/dev/null || \
         "$PY" -c "import site; print(site.getsitepackages()[0] + '/torchaudio')")
  rm -f "$site"/lib/*.so
fi
