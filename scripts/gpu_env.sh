# Sourced by the GPU scripts: installs the wheels that travelled (.whl: the reference and its needs; .whl_srv: the
# server and the OpenAI client; .whl_wm: Perth without its weight file, see scripts/perth_slim.py; .whl_av: PyAV
# for mp3/opus/aac) into /tmp/site, and puts it and the checkout on PYTHONPATH.
# one file per wheel name (the folders share a few; pip refuses a wheel given twice)
wheels=$(ls .whl/*.whl .whl_srv/*.whl .whl_wm/*.whl .whl_av/*.whl 2>/dev/null | awk -F/ '!seen[$NF]++')
[ -n "$wheels" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $wheels >/dev/null 2>&1
[ -f .whl_wm/perth_slim.tar.gz ] && python3 scripts/perth_slim.py restore /tmp/site .whl_wm
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
