"""Training configuration: one YAML file per stage (packaged ``stage1.yaml`` / ``stage2.yaml`` are the
official numbers) plus dotted command-line overrides such as ``solver.learning_rate=1e-4``."""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import MuseTalkError


class ConfigError(MuseTalkError):
    """A training config file or override is missing, malformed or names an unknown key."""


class Config(dict):
    """Nested dict with attribute access (``cfg.solver.learning_rate``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return Config(value) if isinstance(value, dict) and not isinstance(value, Config) else value

    def to_dict(self) -> dict:
        return copy.deepcopy(dict(self))


def default_config_path(stage: int) -> Path:
    """The packaged config of ``stage`` (1 or 2)."""
    return Path(str(resources.files(__package__) / f"stage{stage}.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"training config not found: {path}; pass --config with an existing YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"training config {path} must be a mapping of keys to values")
    return data


def _merge(base: dict, update: dict, where: str) -> dict:
    """``update`` on top of ``base``; keys unknown to ``base`` are errors (catches typos)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise ConfigError(f"unknown training config key {where}{key}; see the packaged stage1.yaml for valid keys")
        if isinstance(base[key], dict) and isinstance(value, dict) and key not in _FREE_FORM:
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


_FREE_FORM = {"config"}  # nested values not validated key by key (e.g. a SyncNet architecture)


def apply_override(data: dict, item: str) -> None:
    """Set one ``dotted.key=value`` in place; the value is parsed as YAML (numbers, lists, null...)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. solver.learning_rate=1e-4")
    parts = key.split(".")
    node = data
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(f"unknown training config key {'.'.join(parts[: depth + 1])} in override {item!r}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown training config key {key} in override {item!r}")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: cannot parse the value {raw!r}") from None


def load_config(stage: int, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Packaged defaults of ``stage``, then the YAML file at ``path`` (if any), then ``overrides``."""
    data = _read_yaml(default_config_path(stage))
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)), "")
    for item in overrides:
        apply_override(data, item)
    # YAML 1.1 reads 1e-4 (no dot) as a string; numbers are what every numeric key wants.
    _coerce_numbers(data)
    if int(data["stage"]) != stage:
        raise ConfigError(f"config says stage {data['stage']} but `musetalk train stage{stage}` was run")
    return Config(data)


def _coerce_numbers(node: dict) -> None:
    for key, value in node.items():
        if isinstance(value, dict):
            _coerce_numbers(value)
        elif isinstance(value, str):
            try:
                node[key] = float(value) if any(c in value for c in ".eE") and value[0] in "+-.0123456789" else value
            except ValueError:
                pass
