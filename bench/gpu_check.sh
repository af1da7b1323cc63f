#!/usr/bin/env bash
# The one command for a lent H200 (issue 4's GPU check; see bench/bench_gpu.py). Prepare here first:
#   .venv/bin/python bench/bench_gpu.py --prepare .gpu
# then call the device tool with: command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=560.
# It uses the device image's own python3 (torch, transformers, pandas...); results come back under $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
out="${OUT:-bench/results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
timeout 480 python3 bench/bench_gpu.py --carry .gpu --out "$out" 2>&1 | tee "$out/bench_gpu.log"
