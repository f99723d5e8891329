#!/usr/bin/env bash
# Set up (if needed), build the default demo dataset (if needed), train the default decoder,
# reconstruct by retrieval and by generation, evaluate with the listening report, and say where
# the results are. Extra arguments go to the main train.py run (e.g. decoder=mlp).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=.venv/bin/python
out=outputs/demo
$py -m b2m.demo --size default --out data/demo
$py train.py out_dir=$out/train "$@"
# select=brain: of each clip's top-k files, keep the one whose predicted BOLD best matches the measured.
$py retrieve.py run=$out/train database=data/demo/stimuli/genres out_dir=$out/retrieval select=brain
# Generation needs predictions in the generator's own conditioning space.
$py train.py target=musicgen_text trainer.logger=none out_dir=$out/train_musicgen_text
$py generate.py predictions=$out/train_musicgen_text out_dir=$out/generated generator.n_samples=4 select=brain
$py evaluate.py run=$out/train retrieval=$out/retrieval generated=$out/generated encoding.enabled=true \
    out_dir=$out/evaluation
echo
echo "results:"
echo "  $out/train/metrics.json             decoder test metrics (test/id_acc: chance 0.5)"
echo "  $out/evaluation/summary.md          metrics with 95% intervals and baselines"
echo "  $out/evaluation/report/index.html   listening report (open in a browser)"
echo "  $out/evaluation/report/listen.html  listening test for people (2AFC; evaluate.py listening=<results>)"
echo "  $out/evaluation/encoding/summary.md encoding analysis: voxelwise r per space and region"
