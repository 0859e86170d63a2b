"""Pipeline definitions in TOML: the keys are the fields of :mod:`vidlight.settings` (as
``vidlight process``'s flags, with ``_`` for ``-``), plus ``source`` and ``sink``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vidlight.errors import VidlightError
from vidlight.pipeline.folder import enhance_folder, videos_in
from vidlight.pipeline.report import RunStats
from vidlight.pipeline.runner import enhance_video
from vidlight.settings import Settings, did_you_mean, fields, parse_pairs

# TOML key -> settings field (``source`` and ``sink`` are the pipeline's ends).
KEYS = {"source": "source", "sink": "sink", **{f.key: f.name for f in fields()}}
# Keys of a many-stream definition (``vidlight serve``): the model and how it runs, and where the
# server runs, are shared by every stream; the rest are per stream, and at the top level they
# are every stream's default.
POOL_KEYS = ("executor", "workers")
SHARED_KEYS = (*(f.key for f in fields("engine", "temporal")), *POOL_KEYS)
STREAM_KEYS = ("source", "sink", *(f.key for f in fields("source", "encoder", "run") if f.key not in POOL_KEYS))


@dataclass(frozen=True)
class Pipeline:
    """A loaded definition: where from, where to, and the settings."""

    source: str
    sink: str
    settings: Settings


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise VidlightError(f"pipeline file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise VidlightError(f"{path} is not valid TOML: {exc}") from None


def _override(config: dict, overrides: list[str]) -> None:
    for key, value in parse_pairs(overrides, "--set value").items():
        if key.startswith("options."):
            config.setdefault("options", {})[key.removeprefix("options.")] = value
        else:
            config[key] = value


def _settings(config: dict, where: str) -> Settings:
    return Settings.from_keys(
        {k: v for k, v in config.items() if k not in ("source", "sink")}, where=where, also=("source", "sink")
    )


def load_pipeline(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Pipeline:
    """Read a pipeline definition and apply ``KEY=VALUE`` overrides (``options.KEY=VALUE`` too)."""
    path = Path(path)
    config = _read_toml(path)
    _override(config, list(overrides))
    settings = _settings(config, f"{path}: ")
    for required in ("source", "sink"):
        if not config.get(required):
            raise VidlightError(f"{path}: {required} is not set; add --set {required}=...")
    return Pipeline(str(config["source"]), str(config["sink"]), settings)


def run_pipeline(pipeline: Pipeline, **options) -> RunStats:
    """Run a loaded definition (a folder of videos as source: each one, into a folder);
    ``options`` override its settings (e.g. ``progress=False``)."""
    run = enhance_folder if videos_in(pipeline.source) else enhance_video
    return run(pipeline.source, pipeline.sink, pipeline.settings.replace(**options))


def load_serve_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[Settings, list]:
    """Read a many-stream definition: shared keys and stream defaults at the top level, one
    ``[[streams]]`` table per stream (``name``, ``source``, ``sink`` and any stream key).
    ``overrides`` (``KEY=VALUE``) apply to the top level.

    Returns:
        the shared :class:`~vidlight.settings.Settings` for :func:`vidlight.pipeline.serve.serve`,
        and its list of streams.
    """
    from vidlight.pipeline.serve import Stream

    path = Path(path)
    config = _read_toml(path)
    _override(config, list(overrides))
    tables = config.pop("streams", None)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise VidlightError(f"{path}: no streams; add a [[streams]] table with a source and a sink for each camera")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        hint = did_you_mean(unknown[0], [*KEYS, "streams"])
        raise VidlightError(f"{path}: unknown key {unknown[0]!r}{hint}; valid keys: {', '.join(KEYS)}, streams")
    defaults = {k: v for k, v in config.items() if k in STREAM_KEYS}
    streams = []
    for n, table in enumerate(tables, 1):
        name = str(table.get("name") or f"stream{n}")
        for key in table:
            if key in SHARED_KEYS:
                raise VidlightError(
                    f"{path}: stream {name!r} sets {key!r}, which every stream shares (one model "
                    f"on one device); set it at the top level"
                )
            if key not in STREAM_KEYS and key != "name":
                hint = did_you_mean(key, ["name", *STREAM_KEYS])
                raise VidlightError(
                    f"{path}: stream {name!r}: unknown key {key!r}{hint}; valid keys: name, {', '.join(STREAM_KEYS)}"
                )
        merged = {**defaults, **{k: v for k, v in table.items() if k != "name"}}
        for required in ("source", "sink"):
            if not merged.get(required):
                raise VidlightError(f"{path}: stream {name!r} has no {required}")
        settings = _settings(merged, f"{path}: stream {name!r}: ")
        streams.append(Stream(name, str(merged["source"]), str(merged["sink"]), settings))
    shared = _settings({k: v for k, v in config.items() if k in SHARED_KEYS}, f"{path}: ")
    return shared, streams
