#!/usr/bin/env bash
# Fetches, on a machine that reaches PyPI, the wheels a GPU machine without an index needs for the GPU scripts
# (scripts/gpu_env.sh installs them there), into ignored folders of the checkout that travel with it:
#   .whl      the reference package and what it imports (parity and `bench --reference`)
#   .whl_srv  the server, the OpenAI client and py-spy (`bench serve`, its PROFILE option)
#   .whl_av   PyAV (mp3/opus/aac responses)
#   .whl_wm   Perth without its 37 MB weight file (scripts/perth_slim.py; needs Perth installed here)
# Usage: bash scripts/gpu_wheels.sh [srv] [av] [wm] [ref]   (default: all). PY_VERSION (3.12) is the GPU machine's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PY_VERSION:-3.12}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
get() {  # folder, then NAME==VERSION or NAME: binary wheels for the GPU machine's Python, no dependencies
  local dir=$1; shift
  mkdir -p "$dir"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dir" "$@"
}
parts=${*:-srv av wm ref}
for part in $parts; do
  case $part in
    # The GPU image has starlette's neighbours (anyio, httpx, h11, prometheus-client, uvloop) but not these.
    srv) get .whl_srv fastapi starlette uvicorn python-multipart pydantic pydantic-core annotated-types \
           typing-inspection opentelemetry-api importlib-metadata openai httpx2 httpcore2 truststore anyio idna h11 distro jiter sniffio platformdirs py-spy soundfile soxr pyloudnorm cffi pycparser future ;;
    av) get .whl_av av ;;
    wm) get .whl_wm "librosa==0.11.0" audioread pooch decorator soxr soundfile "setuptools<81"
        "$PY" scripts/perth_slim.py pack .whl_wm ;;
    ref) get .whl "chatterbox-tts==0.1.7" "s3tokenizer==0.3.0" "conformer==0.3.2" "diffusers==0.29.0" omegaconf \
           antlr4-python3-runtime "librosa==0.11.0" audioread pooch decorator pyloudnorm future soundfile soxr ;;
    *) echo "unknown part: $part (srv, av, wm, ref)" >&2; exit 2 ;;
  esac
done
du -sh .whl* 2>/dev/null
