"""wandb under a sweep agent: the run goes online, its summary keeps the best val/id_acc, the config is flat."""

from __future__ import annotations

import json

import pytest

from b2m.core.config import compose
from b2m.core.errors import B2MError
from b2m.jobs import tracking
from b2m.jobs.evaluate import evaluate
from b2m.jobs import train as train_job
from helpers.bids import make_bids
from helpers.wandb_records import summary_and_config


def test_mode_follows_the_agent():
    assert tracking.wandb_mode("offline", {}) == "offline"
    assert tracking.wandb_mode("offline", {"WANDB_SWEEP_ID": "abc"}) == "online"
    assert tracking.wandb_mode("offline", {"WANDB_SWEEP_ID": "abc", "WANDB_MODE": "disabled"}) == "disabled"
    assert tracking.wandb_mode("disabled", {"WANDB_SWEEP_ID": ""}) == "disabled"


def test_train_under_an_agent_logs_best_score_and_flat_config(tmp_path, monkeypatch):
    import wandb

    root = make_bids(tmp_path / "bids", training_runs=(1, 2, 3), test_runs=(1,), grid=(4, 4, 3))
    # What `wandb agent` sets: a sweep id and no WANDB_MODE. The run is asked to go online; the test
    # records that and writes it offline instead (no server here).
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep123")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    asked = {}
    real_init = wandb.init

    def init(**kwargs):
        asked.update(kwargs)
        return real_init(**dict(kwargs, mode="offline"))

    monkeypatch.setattr(wandb, "init", init)
    out = tmp_path / "run"
    cfg = compose("train", [f"data.root={root}", "data.preprocess.mask=null", f"out_dir={out}", "decoder=mlp",
                            "decoder.width=16", "decoder.max_epochs=6", "decoder.lr=3e-3", "trainer.patience=10",
                            "data.batch_size=16"])
    train_job.train(cfg)
    assert asked["mode"] == "online"
    summary, config = summary_and_config(out)
    scores = [v for v in _history(out, "val/id_acc")]
    assert len(scores) == 6 and summary["val/id_acc"] == pytest.approx(max(scores))
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["test/id_acc"] == pytest.approx(metrics["test/id_acc"])
    # Flat and whole: every leaf of the resolved config under its dotted key, as a sweep names it.
    assert config["decoder.lr"] == pytest.approx(3e-3) and config["decoder.loss.mse"] == 1.0
    assert config["data.delays_tr"] == list(cfg.data.delays_tr) and config["out_dir"] == str(out)
    nested = [k for k, v in config.items() if isinstance(v, dict) and v and k != "_wandb"]
    assert not nested and "lr" not in config  # Lightning's module arguments are not logged over it

    # evaluate.py, run later outside the agent, adds its metrics to the same run (resumed by its id;
    # offline, wandb writes the resumed part into a second folder that `wandb sync` merges).
    monkeypatch.delenv("WANDB_SWEEP_ID")
    wandb.teardown()  # wandb reads the environment once per process; evaluate.py is a process of its own
    evaluation = evaluate(compose("evaluate", [f"run={out}", "n_boot=20", "logo=false", "genre=false",
                                               "report.enabled=false"])).flat()
    summary, _ = summary_and_config(out)
    assert len({p.name.split("-")[3] for p in out.glob("wandb/offline-run-*")}) == 1
    assert summary["eval/test/id_acc"] == pytest.approx(evaluation["test/id_acc"])
    assert summary["val/id_acc"] == pytest.approx(max(scores))


def _history(run_dir, key):
    from helpers.wandb_records import records

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # called before evaluate resumes the run
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                if (item.key or "/".join(item.nested_key)) == key:
                    yield json.loads(item.value_json)


@pytest.mark.parametrize("override, message", [
    (["decoder.loss.mse=0", "decoder.loss.contrastive=0"], "decoder.loss: mse, cosine and contrastive are all 0"),
    (["decoder.lr=-1"], "decoder.lr must be a number > 0"),
    (["decoder.dropout=1.5"], "decoder.dropout must be a number >= 0 and < 1"),
    (["decoder.loss.temperature=0"], "decoder.loss.temperature must be a number > 0"),
])
def test_bad_sweep_combination_is_a_one_line_error(override, message):
    with pytest.raises(B2MError, match=message.replace(".", r"\.").replace("(", r"\(")):
        train_job.train(compose("train", ["decoder=mlp", *override]))
