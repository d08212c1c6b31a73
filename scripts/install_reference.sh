#!/usr/bin/env bash
# Installs the reference package chatterbox-tts==0.1.7 as a *test oracle* into the current Python
# environment, bypassing its pins (torch==2.6, numpy<2, gradio, ...): only what it imports.
# Facts behind each line: shared/notes/reference.md §1 and §9.
set -euo pipefail
PY=${PYTHON:-python}
# Ordinary dependencies (their own deps are harmless).
"$PY" -m pip install -q "transformers==5.2.0" "huggingface_hub==1.33.0" "diffusers==0.29.0" pillow requests \
  "librosa==0.11.0" "pyloudnorm==0.1.1" scikit-learn threadpoolctl omegaconf einops onnx protobuf "setuptools==80.10.2" platformdirs
# Packages whose declared deps must be bypassed.
"$PY" -m pip install -q --no-deps "chatterbox-tts==0.1.7" "s3tokenizer==0.3.0" "conformer==0.3.2" \
  "resemble-perth==1.0.1"
PYTHON="$PY" bash "$(dirname "$0")/install_torchaudio.sh"  # the reference uses Resample, kaldi.fbank, spectrograms
"$PY" -c "import chatterbox.tts, perth; assert perth.PerthImplicitWatermarker is not None; print('reference ok')"
