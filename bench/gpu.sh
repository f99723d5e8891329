#!/usr/bin/env bash
# The GPU check of issue 15: one prepared run on a lent CUDA GPU, about 5 minutes on an H100-class
# chip. Needs a CUDA build of torch in the environment (scripts/setup.sh keeps one already there).
#   bash bench/gpu.sh [out_dir]      # tables in out_dir/*.txt (default bench-gpu/)
# 1. parity: the engine's tests, then greedy codes equal to transformers' generate on CUDA (fp32,
#    in the table's parity column);
# 2. the step at batch 1/8/32/64 in fp16 and bf16 against transformers' generate, CUDA graphs on;
# 3. the same with CUDA graphs off;
# 4. 64 clips of 30 s (1503 steps) in bf16, the goal being under a minute.
# DDP over several GPUs is not part of it yet: `generate.py trainer.devices=N trainer.strategy=ddp`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${1:-bench-gpu}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 B2M_CACHE=${B2M_CACHE:-$out/cache}
"$py" -c "import torch, sys; torch.cuda.is_available() or sys.exit('bench/gpu.sh: torch sees no CUDA GPU'); \
print(torch.__version__, torch.cuda.get_device_name(), torch.cuda.device_count(), 'GPU(s)')" | tee "$out/device.txt"
"$py" -m pytest -q tests/test_generation_lm.py tests/test_generation_engine.py 2>&1 | tail -3 | tee "$out/tests.txt"
bench=("$py" bench/generation.py --device cuda --steps 250 --batches 1 8 32 64 --repeats 2)
"${bench[@]}" --dtypes fp32 fp16 bf16 2>&1 | tee "$out/graphs_on.txt"
"${bench[@]}" --dtypes fp16 bf16 --no-cuda-graph --no-reference 2>&1 | tee "$out/graphs_off.txt"
"$py" bench/generation.py --device cuda --steps 1503 --batches 64 --dtypes bf16 --no-reference 2>&1 \
    | tee "$out/64_clips_30s.txt"
