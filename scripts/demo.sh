#!/usr/bin/env bash
# Set up (if needed), build the default demo dataset (if needed), train the default decoder on it,
# evaluate it, and say where the results are. Extra arguments go to train.py (e.g. decoder=mlp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python
$py -m b2m.data.demo --size default --out data/demo
$py train.py out_dir=outputs/demo/train "$@"
$py evaluate.py run=outputs/demo/train out_dir=outputs/demo/evaluation
echo "results: outputs/demo/train/metrics.json (training run), outputs/demo/evaluation/ (evaluation)"
