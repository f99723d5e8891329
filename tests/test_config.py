"""Configs: Hydra composition of the packaged YAML, overrides checked with one-line errors, the CLI's
Hydra features (--help, --cfg job, multirun)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from b2m.core.config import check_overrides, choices, compose, config_dir, group_config
from b2m.core.errors import B2MError
from b2m.decoders import build_decoder

REPO = Path(__file__).resolve().parent.parent


def test_defaults_compose_groups_and_nested_defaults():
    cfg = compose("train")
    assert cfg.decoder._target_.endswith("RidgeDecoder") and cfg.target._target_.endswith("AcousticSpace")
    assert cfg.data.preprocess.mask.startswith("data/demo/derivatives")  # ${data.root} resolves
    windows = compose("train", ["target=acoustic_windows"]).target
    assert windows.inner == group_config("target", "acoustic")  # acoustic_windows composes acoustic


def test_group_choice_and_value_overrides():
    cfg = compose("train", ["decoder=mlp", "decoder.lr=3e-4", "seed=5", "data.delays_tr=[3,4]"])
    assert cfg.decoder._target_.endswith("MLPDecoder") and cfg.decoder.lr == pytest.approx(3e-4)
    assert cfg.seed == 5 and list(cfg.data.delays_tr) == [3, 4]
    cfg = compose("train", ["decoder=mlp", "decoder.lr=1"])  # an int where a float is expected is fine
    assert cfg.decoder.lr == 1.0 and isinstance(cfg.decoder.lr, float)
    assert compose("train", ["+extra.key=1"]).extra.key == 1  # Hydra's explicit append


@pytest.mark.parametrize("arg, message", [
    ("decoder.lrr=0.1", "config: unknown key 'decoder.lrr'"),
    ("decoder=nope", "config: unknown choice decoder=nope; known: ['contrastive', 'mlp', 'plain_ridge', 'ridge', 'ridge_aligned', 'ridge_cuda', 'transformer']"),
    ("seed=abc", "config: seed expects int, got 'abc'"),
    ("data.subjects=3", "config: data.subjects expects a list, got 3"),
    ("data.preprocess.zscore=maybe", "config: data.preprocess.zscore expects bool"),
    ("seed", "command line: cannot parse 'seed' (expected key=value)"),
    ("seed=[1,", "command line: cannot parse 'seed=[1,'"),
    ("seed=1,2", "command line: a sweep (key=a,b) needs multirun: add -m"),
])
def test_bad_overrides_name_the_key(arg, message):
    with pytest.raises(B2MError, match=None) as err:
        compose("train", [arg])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_yaml_is_the_only_source_of_defaults():
    # Constructors take what the config gives: a key missing from the YAML is an error, not a default.
    mlp = OmegaConf.to_container(group_config("decoder", "mlp"))
    without_width = OmegaConf.create({k: v for k, v in mlp.items() if k != "width"})
    with pytest.raises(B2MError, match="config: decoder: .*width"):
        build_decoder(without_width, [10], 2, (1, 4))
    with pytest.raises(B2MError, match="config: decoder: .*unexpected keyword argument 'widht'"):
        build_decoder(OmegaConf.create({**mlp, "widht": 3}), [10], 2, (1, 4))


def test_configs_ship_inside_the_package():
    assert config_dir() == REPO / "b2m" / "conf"
    assert choices("target") == ["acoustic", "acoustic_windows", "caption", "clap", "clap_text", "encodec", "mert",
                                 "musicgen_lm", "musicgen_text", "musicnn"]
    for path in config_dir().rglob("*.yaml"):
        yaml.safe_load(path.read_text())  # every file parses


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_and_cfg_job(tmp_path):
    res = run(str(REPO / "train.py"), "--help", cwd=tmp_path)
    assert res.returncode == 0 and f"decoder: {', '.join(choices('decoder'))}" in res.stdout
    assert "ridge_cuda" in choices("decoder") and {"default", "gpu", "ddp"} <= set(choices("trainer"))
    res = run("-m", "b2m", "train", "--cfg", "job", "decoder=mlp", "decoder.width=64", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["decoder"]["width"] == 64 and "hydra" not in cfg
    assert list(tmp_path.iterdir()) == []  # nothing written
    res = run("-m", "b2m", "train", "decoder.widht=3", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip() == "error: config: unknown key 'decoder.widht'"
    res = run("-m", "b2m", "nojob")
    assert res.returncode == 2 and res.stderr.startswith("usage: python -m b2m {train,evaluate,generate,retrieve}")


def test_multirun_overrides_are_checked_for_every_job():
    check_overrides("train", ["decoder=transformer", "decoder.heads=2,4"], multirun=True)
    with pytest.raises(B2MError, match=r"unknown key 'decoder.heads' \(in the jobs with decoder=mlp\)"):
        check_overrides("train", ["decoder=mlp,transformer", "decoder.heads=2"], multirun=True)
    with pytest.raises(B2MError, match="config: seed expects int, got 'abc'"):
        check_overrides("train", ["seed=1,abc"], multirun=True)
    with pytest.raises(B2MError, match="unknown choice decoder=nope"):
        check_overrides("train", ["decoder=mlp,nope"], multirun=True)
