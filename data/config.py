"""omegaconf loading against a dataclass schema: unknown keys are errors, not surprises.

`load_config(Schema, ["configs/base.yaml", "configs/x.yaml"], ["a.b=1"])` merges the files
in order, then the command-line dotlist, onto the schema's defaults. A key that the schema
does not have raises `ConfigError` naming the key and listing the valid ones.

A file, or any section in it, may say `extends: other.yaml` (a path relative to the file;
or a list of them, merged in order): that file's content comes first and the keys beside
`extends` are merged over it, so an experiment states only what differs from another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from data.errors import ConfigError, DataNotFoundError


def _valid_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        value = cfg._get_node(key)
        full = f"{prefix}{key}"
        if isinstance(value, DictConfig) and not value._is_missing() and len(value) > 0:
            keys.extend(_valid_keys(value, full + "."))
        else:
            keys.append(full)
    return keys


MAX_CONFIG_BYTES = 1 << 20  # a config is a few kB; a bigger file is not one of ours


def _read_yaml(path: str | os.PathLike) -> DictConfig:
    """One YAML mapping. Aliases are refused (nested aliases expand without bound: a
    "YAML bomb" would hang the loader) and the file size is capped."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: config file not found")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {size} bytes is too large for a config file "
                          f"(limit {MAX_CONFIG_BYTES})")
    try:
        text = path.read_text()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise ConfigError(f"{path}: uses a YAML alias (*{event.anchor}); aliases are "
                                  "not supported in configs, write the values out")
        data = yaml.safe_load(text)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping of keys to values, got a "
                          f"{type(data).__name__} ({str(data)[:40]!r})")
    try:
        cfg = OmegaConf.load(path)  # omegaconf's loader (it reads 1e-3 as a float)
    except Exception as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: must hold a mapping of keys to values")
    return cfg


EXTENDS = "extends"


def _expand(node: Any, path: Path, chain: tuple[Path, ...]) -> Any:
    """`node` (plain YAML data of the file `path`) with every `extends` replaced by the
    named files' content, the keys beside it merged over that."""
    if not isinstance(node, dict):
        return node
    node = {k: _expand(v, path, chain) for k, v in node.items()}
    if EXTENDS not in node:
        return node
    names = node.pop(EXTENDS)
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: `{EXTENDS}` must name a YAML file or a list of them, "
                          f"got {names!r}")
    merged = OmegaConf.create({})
    for name in names:
        parent = path.parent / name
        if parent.resolve() in chain:
            loop = " -> ".join(p.name for p in (*chain, parent.resolve()))
            raise ConfigError(f"{path}: `{EXTENDS}` makes a loop ({loop})")
        if not parent.is_file():
            raise DataNotFoundError(f"{path}: extends {name}, but {parent} does not exist")
        data = OmegaConf.to_container(_read_yaml(parent), resolve=False)
        merged = OmegaConf.merge(merged, _expand(data, parent, (*chain, parent.resolve())))
    return OmegaConf.to_container(OmegaConf.merge(merged, node), resolve=False)


def read_config_file(path: str | os.PathLike) -> DictConfig:
    """One config file as a DictConfig, its `extends` expanded."""
    path = Path(path)
    data = OmegaConf.to_container(_read_yaml(path), resolve=False)
    return OmegaConf.create(_expand(data, path, (path.resolve(),)))


def load_config(schema: Any, files: Sequence[str | os.PathLike] = (),
                overrides: Sequence[str] = ()) -> DictConfig:
    """Merge YAML files and `key=value` overrides onto a structured (dataclass) schema."""
    base = OmegaConf.structured(schema)
    layers: list[tuple[str, DictConfig]] = [(str(f), read_config_file(f)) for f in files]
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    if overrides:
        try:
            layers.append(("command line", OmegaConf.from_dotlist(list(overrides))))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"command-line overrides: {exc}") from exc
    cfg = base
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except (ConfigKeyError, ValidationError, OmegaConfBaseException) as exc:
            key = getattr(exc, "full_key", None) or getattr(exc, "key", None) or "?"
            kind = "unknown key" if isinstance(exc, ConfigKeyError) else "invalid value for"
            valid = ", ".join(_valid_keys(base))
            msg = f"{source}: {kind} {key!r}"
            if isinstance(exc, ConfigKeyError):
                msg += f"; valid keys: {valid}"
            else:
                msg += f" ({str(exc).splitlines()[0]})"
            raise ConfigError(msg) from exc
    try:  # interpolations (${...}) are resolved now, so a bad one fails here, in one line
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        where = f"{key!r}" if key else "an interpolation"
        raise ConfigError(f"cannot resolve {where}: {str(exc).splitlines()[0]}") from exc
    return cfg


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain dict of a resolved config (for saving and hashing)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
