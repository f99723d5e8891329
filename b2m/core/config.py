"""Configs: the YAML in `b2m/conf/`, composed by Hydra, checked before anything runs.

`b2m/conf/<job>.yaml` is a job's root config; its `defaults` pick one file per group
(`b2m/conf/<group>/<choice>.yaml`, placed under the key `<group>`), and a group file may
compose another (`target/acoustic_windows.yaml` puts `target/acoustic.yaml` under `inner`).
The YAML is the only place a default lives: the classes a config names with `_target_`
take every setting from it (`instantiate`). The configs ship inside the package, so a
non-editable install finds them.

Overrides are Hydra's (`group=choice`, `key.sub=value`, `+new_key=value`, sweeps
`key=a,b` under `-m`). `compose` checks them against the composed defaults first: an
unknown key, an unknown choice or a value of another type than the default's is a
B2MError naming the key, rather than Hydra's multi-line message or a silently accepted
string.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import itertools
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
import yaml

from b2m.core.errors import B2MError

CONFIG_MODULE = "b2m.conf"
_MISSING = object()
_SWEEP_NEEDS_MULTIRUN = "command line: a sweep (key=a,b) needs multirun: add -m"


def config_dir() -> Path:
    """The folder of the configs that ship with the package."""
    return Path(str(importlib.resources.files(CONFIG_MODULE)))


def groups() -> list[str]:
    """The config groups (`data`, `decoder`, `target`, ...): the sub-folders of the config folder."""
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir() and not p.name.startswith("_"))


def choices(group: str) -> list[str]:
    """The choices of one group: its YAML files' names."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@contextlib.contextmanager
def _configs() -> Iterator[None]:
    """Hydra set up to compose the packaged configs (inside a job, Hydra already is)."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_module(CONFIG_MODULE, version_base=None):
        yield


def compose(job: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config of `job` (`train`, `evaluate`, `generate`, `retrieve`) with `overrides`, checked.

    Every override must have one value here: a sweep (`key=a,b`) needs the command line's `-m`.
    """
    parsed = parse_overrides(overrides)
    with _configs():
        base = _checked_base(job, parsed, multirun=False)
        cfg = _compose(job, [o.input_line for o in parsed])
    for o in parsed:
        # An int given for a float default stays a float (lr=1 means 1.0).
        if not _is_choice(o) and not o.is_add() and not o.is_delete() and not o.is_hydra_override():
            old = OmegaConf.select(base, o.key_or_group)
            if isinstance(old, float) and isinstance(o.value(), int) and not isinstance(o.value(), bool):
                OmegaConf.update(cfg, o.key_or_group, float(o.value()))
    return cfg


def check_overrides(job: str, overrides: Sequence[str], multirun: bool = False) -> None:
    """Check command-line overrides as `compose` does; with `multirun`, sweeps too (each value
    against the defaults)."""
    parsed = parse_overrides(overrides)
    with _configs():
        _checked_base(job, parsed, multirun)


def _checked_base(job: str, parsed: list[Override], multirun: bool) -> DictConfig:
    """The config with the group choices only, after checking every override against it (under a
    sweep of choices, against every combination: each job of the sweep must accept every key)."""
    if not multirun and any(o.is_sweep_override() for o in parsed):
        raise B2MError(_SWEEP_NEEDS_MULTIRUN)
    fixed = [o.input_line for o in parsed if _is_choice(o) and not o.is_sweep_override()]
    swept = [[f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()]
             for o in parsed if _is_choice(o) and o.is_sweep_override()]
    for combination in itertools.product(*swept):
        base = _compose(job, [*fixed, *combination])
        try:
            _check(parsed, base)
        except B2MError as err:
            raise B2MError(f"{err} (in the jobs with {' '.join(combination)})" if combination else str(err)) from None
    return base


def parse_overrides(overrides: Sequence[str]) -> list[Override]:
    parser = OverridesParser.create()
    parsed = []
    for line in overrides:
        try:
            parsed += parser.parse_overrides([line])
        except HydraException as err:
            reason = str(err).splitlines()[0].strip() if str(err).strip() else "bad syntax"
            hint = ("expected key=value" if "=" not in line else
                    f"{reason}; quote a value that holds spaces or special characters: key='...'")
            raise B2MError(f"command line: cannot parse {line!r} ({hint})") from None
    return parsed


def _is_choice(o: Override) -> bool:
    """A group choice (`decoder=mlp`) rather than a value (`decoder.lr=1e-3`)."""
    return o.key_or_group in groups() or o.key_or_group.startswith("hydra/") or o.package is not None


def _compose(job: str, lines: list[str]) -> DictConfig:
    try:
        return hydra_compose(job, overrides=lines)
    except HydraException as err:
        raise B2MError(_hydra_message(job, lines, err)) from None
    except OmegaConfBaseException as err:
        raise B2MError(f"config: {str(err).splitlines()[0]}") from None


def _hydra_message(job: str, lines: list[str], err: Exception) -> str:
    text = str(err)
    for line in lines:
        group, _, choice = line.partition("=")
        if group in groups() and f"'{group}/{choice}'" in text:
            return f"config: unknown choice {group}={choice}; known: {choices(group)}"
    if job not in [p.stem for p in config_dir().glob("*.yaml")]:
        return f"config: unknown job {job!r}"
    return f"config: {text.splitlines()[0]}"


def _check(parsed: list[Override], base: DictConfig) -> None:
    """Every value override names an existing key and keeps its default's type."""
    for o in parsed:
        if _is_choice(o) or o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override():
            continue
        key = o.key_or_group
        old = OmegaConf.select(base, key, default=_MISSING)
        if old is _MISSING:
            raise B2MError(f"config: unknown key {key!r}")
        values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        for value in values:
            check_type(key, old, value)


def check_type(key: str, old: Any, new: Any) -> None:
    """A B2MError unless `new` may replace `old` (ints for floats; anything for a null default)."""
    if old is None or new is None:
        return
    if isinstance(new, str) and "${" in new:
        return  # an interpolation, resolved later
    if isinstance(old, bool) or isinstance(new, bool):
        ok = isinstance(old, bool) and isinstance(new, bool)
    elif isinstance(old, float):
        ok = isinstance(new, (int, float))
    elif isinstance(old, int):
        ok = isinstance(new, int)
    elif isinstance(old, str):
        ok = isinstance(new, (str, int, float))
    elif isinstance(old, (ListConfig, list)):
        ok = isinstance(new, (ListConfig, list))
    elif isinstance(old, (DictConfig, dict)):
        ok = isinstance(new, (DictConfig, dict))
    else:
        ok = True
    if not ok:
        raise B2MError(f"config: {key} expects {_type_name(old)}, got {new!r}")


def _type_name(value: Any) -> str:
    if isinstance(value, (ListConfig, list)):
        return "a list"
    if isinstance(value, (DictConfig, dict)):
        return "a mapping"
    return type(value).__name__


# ----------------------------------------------------------------- value ranges
def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _interval(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
              integer: bool = False) -> tuple[Callable[[Any], bool], str]:
    """A rule: a finite number (an integer when `integer`) in [lo, hi] (ends open when asked)."""
    def ok(x: Any) -> bool:
        if not _number(x) or (integer and not isinstance(x, int)):
            return False
        return (x > lo if lo_open else x >= lo) and (hi is None or (x < hi if hi_open else x <= hi))

    kind = "an integer" if integer else "a number"
    upper = "" if hi is None else (f" and < {hi}" if hi_open else f" and <= {hi}")
    return ok, f"{kind} {'>' if lo_open else '>='} {lo}{upper}"


def _list_of(item: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    """A rule: a non-empty list whose every item follows `item`."""
    ok, wants = item
    return (lambda x: isinstance(x, (list, ListConfig)) and len(x) > 0 and all(ok(v) for v in x),
            f"a non-empty list, each item {wants}")


def _distinct(rule: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    """A rule: `rule`, and no item twice (`training_runs=[1, 1]` would weigh run 1 double)."""
    ok, wants = rule
    return lambda x: ok(x) and len(set(x)) == len(x), f"{wants}, no item twice"


def _mapping_of(item: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    """A rule: a mapping whose every value follows `item`."""
    ok, wants = item
    return (lambda x: isinstance(x, (dict, DictConfig)) and all(ok(v) for v in x.values()),
            f"a mapping, each value {wants}")


def _one_of(*choices: Any) -> tuple[Callable[[Any], bool], str]:
    """A rule: one of `choices` (compared as given, so 32 and "32" differ)."""
    return (lambda x: any(x == c and type(x) is type(c) for c in choices),
            f"one of {', '.join(repr(c) for c in choices)}")


def _devices(x: Any) -> bool:
    """Lightning's `devices`: a count >= 1, -1 (all), "auto", or a non-empty list of device indices."""
    if isinstance(x, (list, ListConfig)):
        return len(x) > 0 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x)
    return x == "auto" or (isinstance(x, int) and not isinstance(x, bool) and (x >= 1 or x == -1))


_COUNT = _interval(1, integer=True)
_POSITIVE = _list_of(_interval(0, lo_open=True))
_DELAYS = _distinct(_list_of(_interval(0, integer=True)))
_SHARE = _interval(0, 1, hi_open=True)
# Dotted key -> (rule, what the rule asks), applied by `check_values` wherever the key exists.
VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _interval(0, integer=True),
    "data.batch_size": _COUNT, "data.num_workers": _interval(0, integer=True), "data.val_fraction": _SHARE,
    "data.delays_tr": _DELAYS,
    "data.training_runs": _distinct(_list_of(_interval(1, integer=True))),
    "data.test_runs": _distinct(_list_of(_interval(1, integer=True))),
    "data.subject_training_runs": _mapping_of(_distinct(_list_of(_interval(1, integer=True)))),
    "decoder.lr": _interval(0, lo_open=True), "decoder.weight_decay": _interval(0),
    "decoder.dropout": _SHARE, "decoder.input_dropout": _SHARE,
    "decoder.width": _COUNT, "decoder.depth": _COUNT, "decoder.heads": _COUNT,
    "decoder.warmup_epochs": _interval(0, integer=True), "decoder.max_epochs": _COUNT,
    "decoder.n_folds": _interval(2, integer=True), "decoder.alphas": _POSITIVE, "decoder.linear_lr": _interval(0),
    "decoder.encoding_alphas": _POSITIVE,
    "decoder.loss.mse": _interval(0), "decoder.loss.cosine": _interval(0), "decoder.loss.contrastive": _interval(0),
    "decoder.loss.temperature": _interval(0, lo_open=True),
    "trainer.patience": _COUNT,
    "trainer.devices": (_devices, 'a count >= 1, -1 (every device), "auto" or a list of device indices'),
    "trainer.accelerator": _one_of("cpu", "gpu", "cuda", "mps", "auto"),
    "trainer.strategy": _one_of("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp", "deepspeed"),
    # Lightning's precision names (and their short aliases).
    "trainer.precision": _one_of("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true",
                                 "transformer-engine", "transformer-engine-float16", "32", "16", "bf16", "64"),
    "trainer.logger": _one_of("wandb", "csv", "none"),
    "trainer.wandb_mode": _one_of("offline", "online", "disabled"),
    "decoder.dtype": _one_of("float32", "float64"),
    "decoder.scoring": _one_of("r2", "neg_mse"),
    "data.preprocess.poly_order": _interval(0, integer=True),
    "data.preprocess.median_window_s": _interval(0, lo_open=True),
    "data.preprocess.auto_threshold": _interval(0, 1),
    "n_boot": _COUNT, "ci_level": _interval(0, 1, lo_open=True, hi_open=True), "max_draws": _COUNT,
    "report.listening_trials": _COUNT,
    "tags.weights": _one_of("mtt", "msd"), "tags.top_k": _interval(1, 50, integer=True),
    "encoding.n_folds": _interval(2, integer=True), "encoding.delays_tr": _DELAYS, "encoding.alphas": _POSITIVE,
    "encoding.n_perm": _interval(0, integer=True), "encoding.fdr_q": _interval(0, 1, lo_open=True, hi_open=True),
    "encoding.top_k": _COUNT, "encoding.partition.ratios": _POSITIVE,
    "generator.batch_size": _COUNT, "generator.n_samples": _COUNT, "generator.seed": _interval(0, integer=True),
    "generator.top_k": _interval(0, integer=True), "generator.top_p": _interval(0, 1),
    "generator.temperature": _interval(0, lo_open=True), "generator.guidance_scale": _interval(0),
    "generator.precision": _one_of("auto", "fp32", "bf16", "fp16", "int8"),  # musicgen.precision.PRECISIONS
    "k": _COUNT, "precision": _one_of("auto", "fp32", "bf16"),  # retrieve.py's first pass
    "workers": (lambda x: x == "auto" or _interval(0, integer=True)[0](x), '"auto" or an integer >= 0'),
    "shards": _COUNT, "shard": _interval(0, integer=True),
    "select.method": _one_of("none", "brain"), "select.n_folds": _interval(2, integer=True),
    "select.alphas": _POSITIVE, "select.seed": _interval(0, integer=True),
}


def check_values(cfg: DictConfig) -> None:
    """A B2MError naming the first key whose value is out of its range (`VALUE_RULES`), or a decoder whose
    loss weights are all 0; a job calls this before it reads data or writes anything."""
    for key, (ok, wants) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING and value is not None and not ok(value):
            shown = list(value) if isinstance(value, ListConfig) else value
            raise B2MError(f"config: {key} must be {wants}, got {shown!r}")
    loss = OmegaConf.select(cfg, "decoder.loss", default=None)
    if isinstance(loss, DictConfig) and not any(loss.get(k) for k in ("mse", "cosine", "contrastive")):
        raise B2MError("config: decoder.loss: mse, cosine and contrastive are all 0; give one a weight > 0")


def check_accelerator(device: str, key: str) -> None:
    """A B2MError if `device` (`cpu`, `gpu`, `cuda[:n]`, `auto`, ...) asks for a GPU that torch cannot see."""
    import torch

    if str(device).split(":")[0] in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise B2MError(f"config: {key}={device}, but torch {torch.__version__} ({build}) sees no CUDA GPU; "
                       f"use the CPU (trainer=default) or a CUDA build of torch on a GPU machine")


def group_config(group: str, choice: str) -> DictConfig:
    """One group file composed on its own (its own defaults included), e.g. `target/acoustic`."""
    if choice not in choices(group):
        raise B2MError(f"config: unknown choice {group}={choice}; known: {choices(group)}")
    with _configs():
        cfg = _compose(f"{group}/{choice}", [])
    # A group file composed as a root sits under its group key.
    return cfg[group] if group in cfg and len(cfg) == 1 else cfg


def _targets(obj: Any, where: str) -> Iterator[tuple[str, Any]]:
    """`(dotted key, value)` of every `_target_` at any depth of a plain config (dicts and lists)."""
    if isinstance(obj, dict):
        if "_target_" in obj:
            yield f"{where}._target_", obj["_target_"]
        for key, value in obj.items():
            yield from _targets(value, f"{where}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _targets(value, f"{where}[{i}]")


@functools.cache
def packaged_targets() -> frozenset[str]:
    """Every `_target_` that a packaged config names: the only code a config may ask to build."""
    return frozenset(str(target) for path in config_dir().rglob("*.yaml")
                     for _, target in _targets(yaml.safe_load(path.read_text()), path.stem))


def check_targets(cfg: DictConfig, what: str) -> None:
    """A B2MError naming the first `_target_` (at any depth of `cfg`) that no packaged config names.

    A config can come from a run folder someone shared, and Hydra's `instantiate` calls whatever
    `_target_` names (`numpy.load` of a pickle, `shutil.copyfile`, ...): only the classes of b2m's own
    configs may be built. A new class gets a config file under `b2m/conf/<group>/` to be allowed.
    """
    for key, target in _targets(OmegaConf.to_container(cfg, resolve=False), what):
        if target not in packaged_targets():
            raise B2MError(f"config: {key}: {target!r} is not a class of b2m's packaged configs (b2m/conf); "
                           f"a config may only build those")


def instantiate(cfg: DictConfig, what: str, **kwargs: Any) -> Any:
    """The object a config section names with `_target_`, built with its keys and `kwargs`.

    `what` names the section in errors (`target`, `decoder`). Keys a constructor does not
    take are a B2MError naming the section, as is a section without `_target_` and any
    `_target_` that is not one of the packaged configs' (`check_targets`).
    """
    if not isinstance(cfg, DictConfig) or "_target_" not in cfg:
        raise B2MError(f"config: {what} has no _target_ (the class it builds)")
    check_targets(cfg, what)
    try:
        return hydra_instantiate(cfg, _convert_="all", **kwargs)
    except HydraException as err:
        cause = err.__cause__
        if isinstance(cause, B2MError):
            raise cause from None
        if cause is not None:  # the constructor's own exception: say what it was, not Hydra's key path
            text = " ".join(str(cause).split())[:300] or type(cause).__name__
            raise B2MError(f"config: {what}: building {cfg._target_} failed: {type(cause).__name__}: {text}") from None
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise B2MError(f"config: {what}: {lines[-1] if lines else err}") from None


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from b2m.core.io import write_text

    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
