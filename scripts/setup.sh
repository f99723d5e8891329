#!/usr/bin/env bash
# Create .venv and install b2m with its test tools. Idempotent: a second call returns at once
# unless pyproject.toml or this script changed. B2M_VENV picks another environment folder.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${B2M_VENV:-.venv}
stamp="$venv/.b2m-installed"
want=$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-40)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setting up $venv (first run: about two minutes)" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: 2.13.0 is the CPU build this project is tested with. A torch already in the
# environment (say, a CUDA build a GPU user installed) is kept.
"$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" torch==2.13.0
"${pip[@]}" -e ".[dev]"
# The demo's synthesizer declares pyaudio (a PortAudio build) only for playback, which b2m never uses.
"${pip[@]}" --no-deps "tinysoundfont>=0.3"
# musicnn's trained checkpoints (b2m.targets.musicnn reads them without TensorFlow). Its metadata pins
# TensorFlow 1 and numpy < 1.17, which b2m never imports from it.
"${pip[@]}" --no-deps "musicnn==0.1.0"
echo "$want" > "$stamp"
