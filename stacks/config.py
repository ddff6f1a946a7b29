"""The one configuration object of the CDK app, built from `cdk.json` context.

Context layout (documented key by key in docs/deploy.md):

- `environment`: "dev" or "prod" (`cdk deploy -c environment=prod`).
- `churnops`: every setting, grouped by construct (`storage`, `alerts`, `database`, `serving`,
  `monitoring`, `ingestion`, `retrain`, `rollout`) plus shared keys (`name_prefix`, `contract_name`,
  `removal_policy`, `log_retention_days`) that fill the same-named field of any section.
- `churnops:<environment>`: overrides for that environment, merged key by key over `churnops`
  (prod: retained data, deletion protection, Multi-AZ, a bigger instance, WAF on, ...).
- `churnops.<section>.<field>` or `churnops.<field>`: a single override from the command line,
  e.g. `-c churnops.alerts.alert_email=ops@example.com`; strings are converted to the field's type.

A missing key (for a field without a default), an unknown key, a value of the wrong type or one
its dataclass refuses stops the synth with a message naming the key. cdk.json lists every field
of every settings class, defaults included (tests/infra/test_config.py keeps it so). Constructs
never read context themselves.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnops.errors import ChurnOpsError
from churnops.wiring import RolloutSettings
from stacks.alerts import AlertsSettings
from stacks.database import DatabaseSettings, log_retention
from stacks.ingestion import IngestionSettings
from stacks.monitoring import MonitoringSettings
from stacks.retrain import RetrainSettings
from stacks.serving import ServingSettings
from stacks.storage import StorageSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = REPO_ROOT / "cdk.json"
ENVIRONMENTS = ("dev", "prod")
ROOT_KEY = "churnops"
# Keys of the `churnops` object that are not sections: they fill any section field of that name.
SHARED_KEYS = ("name_prefix", "contract_name", "removal_policy", "log_retention_days")
REMOVAL_POLICIES = ("destroy", "snapshot", "retain")


class ConfigError(ValueError):
    """A context key is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Config:
    environment: str
    name_prefix: str
    contract_name: str
    storage: StorageSettings
    alerts: AlertsSettings
    database: DatabaseSettings
    serving: ServingSettings
    monitoring: MonitoringSettings
    ingestion: IngestionSettings
    retrain: RetrainSettings
    rollout: RolloutSettings

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Config:
        """Build from a flat context mapping (`app.node.get_all_context()` or a cdk.json's)."""
        environment = context.get("environment")
        if environment not in ENVIRONMENTS:
            raise ConfigError(
                f"context 'environment' is {environment!r}; expected one of {', '.join(ENVIRONMENTS)}"
            )
        base = context.get(ROOT_KEY)
        if not isinstance(base, Mapping):
            raise ConfigError(f"context '{ROOT_KEY}' is missing or not an object (see cdk.json)")
        merged = _deep_merge(base, context.get(f"{ROOT_KEY}:{environment}") or {})
        merged = _apply_flat_overrides(merged, context)

        shared = {key: merged.get(key) for key in SHARED_KEYS}
        for key, value in shared.items():
            if value is None:
                raise ConfigError(f"context '{ROOT_KEY}.{key}' is missing")
        if shared["removal_policy"] not in REMOVAL_POLICIES:
            raise ConfigError(
                f"context '{ROOT_KEY}.removal_policy' is {shared['removal_policy']!r}; "
                f"expected one of {', '.join(REMOVAL_POLICIES)}"
            )
        hints = typing.get_type_hints(cls)
        sections: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            kind = hints[field.name]
            if not dataclasses.is_dataclass(kind):
                continue
            raw = merged.get(field.name)
            if not isinstance(raw, Mapping):
                raise ConfigError(f"context '{ROOT_KEY}.{field.name}' is missing or not an object")
            sections[field.name] = build_settings(
                kind, raw, where=f"{ROOT_KEY}.{field.name}", shared=shared
            )
            days = getattr(sections[field.name], "log_retention_days", None)
            if days is not None:
                try:
                    log_retention(days)
                except ValueError as err:
                    raise ConfigError(
                        f"context '{ROOT_KEY}.{field.name}.log_retention_days': {err}"
                    ) from None
        known = {f.name for f in dataclasses.fields(cls)} | set(SHARED_KEYS)
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ConfigError(f"unknown context key(s) under '{ROOT_KEY}': {', '.join(unknown)}")
        return cls(
            environment=environment,
            name_prefix=_coerce(shared["name_prefix"], str, f"{ROOT_KEY}.name_prefix"),
            contract_name=_coerce(shared["contract_name"], str, f"{ROOT_KEY}.contract_name"),
            **sections,
        )

    @classmethod
    def from_cdk_json(
        cls, path: Path = CDK_JSON, overrides: Mapping[str, Any] | None = None
    ) -> Config:
        """The configuration `cdk synth` would see, with optional `-c`-style overrides (tests)."""
        return cls.from_context({**cdk_json_context(path), **(overrides or {})})


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    return dict(json.loads(path.read_text())["context"])


def build_settings(
    kind: type[Any], raw: Mapping[str, Any], *, where: str, shared: Mapping[str, Any]
) -> Any:
    """One settings dataclass from its context object: every field without a default present
    (directly or as a shared key of the same name), no unknown key, values converted to the field
    types, the dataclass's own checks wrapped so the message names the section."""
    hints = typing.get_type_hints(kind)
    names = [f.name for f in dataclasses.fields(kind)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown context key(s) under '{where}': {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        name = field.name
        key = f"{where}.{name}"
        if name in raw:
            value = raw[name]
        elif name in shared:
            value = shared[name]
        elif _has_default(field):
            continue  # the dataclass's own default (tests/infra checks cdk.json lists it anyway)
        else:
            raise ConfigError(f"context '{key}' is missing")
        values[name] = _coerce(value, hints[name], key, shared=shared)
    try:
        return kind(**values)
    except (ValueError, TypeError, ChurnOpsError) as err:
        raise ConfigError(f"context '{where}': {err}") from None


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def _coerce(value: Any, kind: Any, key: str, *, shared: Mapping[str, Any] | None = None) -> Any:
    """`value` as `kind`; strings (from `cdk -c`) are parsed. Refuses anything else."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, key, shared=shared)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"context '{key}' is {value!r}; expected one of {list(args)}")
        return value
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            raise ConfigError(f"context '{key}' must be an object")
        return build_settings(kind, value, where=key, shared=shared or {})  # type: ignore[arg-type]
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_json(value, key) if value.strip().startswith("[") else value.split(",")
        if not isinstance(value, list | tuple):
            raise ConfigError(f"context '{key}' must be a list")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", shared=shared) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or kind in (dict, Mapping):
        if isinstance(value, str):
            value = _parse_json(value, key)
        if not isinstance(value, Mapping):
            raise ConfigError(f"context '{key}' must be an object")
        return dict(value)
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"context '{key}' is {value!r}; expected true or false")
    if kind is int:
        if isinstance(value, bool):
            raise ConfigError(f"context '{key}' is {value!r}; expected a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"context '{key}' is {value!r}; expected a whole number")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"context '{key}' is {value!r}; expected a number")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"context '{key}' is {value!r}; expected a string")
    raise ConfigError(f"context '{key}': field type {kind!r} is not supported by stacks/config.py")


def _parse_json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(f"context '{key}' is not valid JSON: {text!r}") from None


def _deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _apply_flat_overrides(merged: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """`churnops.<field>` / `churnops.<section>.<field>` keys, as `cdk -c` gives them."""
    prefix = ROOT_KEY + "."
    for key, value in context.items():
        if not key.startswith(prefix):
            continue
        path = key[len(prefix) :].split(".")
        if len(path) > 2 or not all(path):
            raise ConfigError(f"context override '{key}' must be churnops.<section>.<field>")
        target: Any = merged
        for part in path[:-1]:
            target = target.get(part)
            if not isinstance(target, dict):
                raise ConfigError(f"context override '{key}': no section '{part}'")
        target[path[-1]] = value
    return merged
