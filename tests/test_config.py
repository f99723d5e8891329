"""Config composition and command-line overrides."""

from __future__ import annotations

import pytest

from b2m.config import load_config
from b2m.errors import B2MError


def test_defaults_compose_groups():
    cfg = load_config("train")
    assert cfg.decoder.name == "ridge" and cfg.target.name == "acoustic"
    assert cfg.data.preprocess.mask.startswith("data/demo/derivatives")  # ${data.root} resolved


def test_both_override_forms_and_group_choice(tmp_path):
    (tmp_path / "decoder").mkdir()
    (tmp_path / "decoder" / "a.yaml").write_text("name: a\nlr: 0.1\nwidth: 8\n")
    (tmp_path / "decoder" / "b.yaml").write_text("name: b\nlr: 0.2\nflags: [1, 2]\n")
    (tmp_path / "run.yaml").write_text("defaults:\n  - decoder: a\nseed: 0\nout_dir: x\n")
    cfg = load_config("run", ["--decoder=b", "--decoder.lr=3e-4", "seed=5", "decoder.flags=[3]"], tmp_path)
    assert cfg.decoder.name == "b" and cfg.decoder.lr == pytest.approx(3e-4)
    assert cfg.seed == 5 and list(cfg.decoder.flags) == [3]
    cfg = load_config("run", ["decoder.lr=1"], tmp_path)  # an int where a float is expected is fine
    assert cfg.decoder.lr == 1.0 and isinstance(cfg.decoder.lr, float)


@pytest.mark.parametrize("arg, message", [
    ("decoder.lrr=0.1", "unknown key 'decoder.lrr'"),
    ("decoder=nope", "unknown choice decoder=nope"),
    ("seed=abc", "seed expects int, got 'abc'"),
    ("data.subjects=3", "data.subjects expects a list, got 3"),
    ("data.preprocess.zscore=maybe", "data.preprocess.zscore expects bool"),
    ("seed", "expected key=value"),
])
def test_bad_overrides_name_the_key(arg, message):
    with pytest.raises(B2MError, match=message):
        load_config("train", [arg])
