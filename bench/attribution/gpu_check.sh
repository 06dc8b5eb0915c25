#!/usr/bin/env bash
# One short GPU check of the attribution stage (< 4 minutes on an H100/H200):
#   1. a Python with torch: the repo's .venv, else the system python3 on src/ when it has
#      every dependency (no network needed), else a venv in /tmp/v reusing a system torch
#      (--system-site-packages), else a fresh venv that pip-installs torch;
#   2. the attribution tests (they parametrise device over cuda when CUDA is available);
#   3. fast-vs-reference samples/s for DeepFM and DCN-Mix, fp32 and bf16;
#   4. at Criteo shape (synthetic Criteo, CRITEO_ROWS rows, default 500000; DeepFM 39 x 16,
#      MLP 400x3): one training epoch and the default attribution with no cap, on the
#      device, timed in the same run: its cost in training epochs, passes, the precision
#      `--dtype auto` chose and its agreement with fp32 (bf16 on a GPU); safety cap 10 epochs.
# Usage:  bash bench/attribution/gpu_check.sh                 (GPU machine)
#         BENCH_TIMEOUT=900 CRITEO_ROWS=20000 bash bench/attribution/gpu_check.sh --device cpu --quick
#                                                         (dry run on a slow CPU)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE=auto
QUICK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
DEPS="numpy safetensors pyyaml scikit-learn tqdm pytest pytest-timeout"
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, shaver" 2>/dev/null; then
  PY=.venv/bin/python
elif python3 -c "import torch, numpy, safetensors, yaml, sklearn, tqdm, pytest, pytest_timeout" \
    2>/dev/null; then
  # a machine without network but with the dependencies: run the source tree as it is
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  PY=python3
elif python3 -c "import torch" 2>/dev/null; then
  [ -x /tmp/v/bin/python ] || python3 -m venv --system-site-packages /tmp/v
  /tmp/v/bin/pip install -q $DEPS
  /tmp/v/bin/pip install -q --no-deps -e .
  PY=/tmp/v/bin/python
else
  [ -x /tmp/v/bin/python ] || python3 -m venv /tmp/v
  /tmp/v/bin/pip install -q torch $DEPS
  /tmp/v/bin/pip install -q --no-deps -e .
  PY=/tmp/v/bin/python
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "== attribution tests =="
timeout 150 "$PY" -m pytest -q -p no:cacheprovider --timeout 120 \
  tests/test_attribution_engines.py tests/test_attribution_api.py tests/test_attribution_result.py
echo "== fast vs reference =="
timeout "${BENCH_TIMEOUT:-150}" "$PY" bench/attribution/bench_attribution.py --device "$DEVICE" \
  --repeats 3 $QUICK
echo "== Criteo shape: one training epoch, then the default attribution to its own stop =="
timeout "${CRITEO_TIMEOUT:-420}" "$PY" bench/attribution/epoch_vs_default.py \
  --rows "${CRITEO_ROWS:-500000}" --work "${CRITEO_WORK:-/tmp/gpu-check-criteo}" \
  --device "$DEVICE" --uncapped 10
