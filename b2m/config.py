"""Configs: omegaconf YAML composed from one small file per group, overridden on the command line.

`configs/<name>.yaml` is the root; its `defaults` list picks one file per group
(`configs/<group>/<choice>.yaml`, placed under the key `<group>`). The command
line then takes, in either form (the second is what a wandb sweep agent passes):

    group=choice   key.sub=value        --group=choice   --key.sub=value

An unknown key, an unknown choice or a value of the wrong type is a B2MError
naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from b2m.errors import B2MError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def load_config(name: str, argv: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """Compose `configs/<name>.yaml` with its group defaults and the command-line overrides `argv`."""
    config_dir = Path(config_dir) if config_dir is not None else CONFIG_DIR
    root = _read_yaml(config_dir / f"{name}.yaml")
    defaults = root.pop("defaults", []) or []
    choices: dict[str, str] = {}
    for entry in defaults:
        (group, choice), = entry.items()
        choices[group] = choice

    overrides: list[tuple[str, str]] = []
    for arg in argv:
        key, sep, value = arg.lstrip("-").partition("=")
        if not sep or not key:
            raise B2MError(f"command line: expected key=value, got {arg!r}")
        if key in choices:
            choices[key] = value
        else:
            overrides.append((key, value))

    cfg = OmegaConf.create(root)
    for group, choice in choices.items():
        path = config_dir / group / f"{choice}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
            raise B2MError(f"config: unknown choice {group}={choice}; known: {known}")
        cfg[group] = OmegaConf.create(_read_yaml(path))
    for key, value in overrides:
        _set(cfg, key, _parse_value(key, value))
    OmegaConf.resolve(cfg)
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise B2MError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise B2MError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise B2MError(f"{path}: a config file must hold a mapping")
    return data


def _parse_value(key: str, text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        raise B2MError(f"config: cannot parse the value of {key}: {text!r}") from None
    if isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string; a sweep agent passes such floats.
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _set(cfg: DictConfig, dotted: str, value: Any) -> None:
    """Set an existing key, checking that the new value has the old value's type."""
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            raise B2MError(f"config: unknown key {dotted!r}")
        if i < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    node[parts[-1]] = _check_type(dotted, old, value)


def _check_type(key: str, old: Any, new: Any) -> Any:
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, (int, float)):
        return float(new)
    elif isinstance(old, int) and isinstance(new, int):
        return new
    elif isinstance(old, str) and isinstance(new, (str, int, float)):
        return str(new)
    elif isinstance(old, (ListConfig, list)) and isinstance(new, list):
        return new
    elif isinstance(old, (DictConfig, dict)) and isinstance(new, dict):
        return new
    raise B2MError(f"config: {key} expects {_type_name(old)}, got {new!r}")


def _type_name(value: Any) -> str:
    if isinstance(value, (ListConfig, list)):
        return "a list"
    if isinstance(value, (DictConfig, dict)):
        return "a mapping"
    return type(value).__name__


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from b2m.io import write_text

    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
