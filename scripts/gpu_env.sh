# Sourced by the GPU scripts: installs the wheels that travelled (.whl: the reference and its needs; .whl_srv: the
# server and the OpenAI client; .whl_wm: Perth without its weight file, see scripts/perth_slim.py; .whl_av: PyAV
# for mp3/opus/aac; .whl_ray: Ray Serve) into /tmp/site, and puts it and the checkout on PYTHONPATH.
# one file per wheel name (the folders share a few; pip refuses a wheel given twice)
wheels=$(ls .whl/*.whl .whl_srv/*.whl .whl_wm/*.whl .whl_av/*.whl .whl_ray/*.whl 2>/dev/null | awk -F/ '!seen[$NF]++')
[ -n "$wheels" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels >/dev/null 2>&1
[ -f .whl_ray/ray_slim.tar.xz ] && mkdir -p /tmp/site && tar xJf .whl_ray/ray_slim.tar.xz -C /tmp/site \
  && chmod +x /tmp/site/ray/core/src/ray/*/* 2>/dev/null  # Ray Serve (gpu_wheels.sh ray)
[ -f .whl_wm/perth_slim.tar.gz ] && python3 scripts/perth_slim.py restore /tmp/site .whl_wm
# bytecode, as `pip install` writes it (the wheels go in with --no-compile): a first start should not compile it
[ -f /tmp/site/.compiled ] || { python3 -m compileall -q -j 0 /tmp/site cadence > /dev/null 2>&1; touch /tmp/site/.compiled; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
