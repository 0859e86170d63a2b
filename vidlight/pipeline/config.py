"""Pipeline definitions in TOML: the same vocabulary as ``vidlight process``'s flags."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from vidlight.errors import VidlightError
from vidlight.pipeline.runner import RunStats, enhance_folder, enhance_video, videos_in

# TOML key -> enhance_video argument (the CLI flag names, with '-' as '_').
KEYS = {
    "source": "input",
    "sink": "output",
    "model": "model",
    "weights": "weights",
    "device": "device",
    "batch_size": "batch_size",
    "fp16": "fp16",
    "codec": "codec",
    "crf": "crf",
    "preset": "preset",
    "max_frames": "max_frames",
    "tile": "tile",
    "tile_overlap": "tile_overlap",
    "smooth": "smooth",
    "smooth_time": "smooth_time",
    "denoise": "denoise",
    "strength": "strength",
    "duration": "duration_seconds",
    "transport": "transport",
    "open_timeout": "open_timeout_seconds",
    "read_timeout": "read_timeout_seconds",
    "reconnect": "reconnect",
    "max_reconnects": "max_reconnects",
    "latest_frame": "latest_frame",
    "fps": "fps",
    "segment": "segment_seconds",
    "overwrite": "overwrite",
    "options": "model_options",
}


def _value(text: str) -> object:
    """A ``--set`` value: a TOML value when it parses as one (20, true, "x"), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise VidlightError(f"pipeline file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise VidlightError(f"{path} is not valid TOML: {exc}") from None


def _override(config: dict, overrides: list[str]) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise VidlightError(f"--set expects KEY=VALUE, got {item!r}")
        if key.startswith("options."):
            config.setdefault("options", {})[key.removeprefix("options.")] = _value(text)
        else:
            config[key] = _value(text)


def load_pipeline(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """Read a pipeline definition and apply ``KEY=VALUE`` overrides (``options.KEY=VALUE`` too)."""
    path = Path(path)
    config = _read_toml(path)
    _override(config, overrides)
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise VidlightError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}")
    for required in ("source", "sink"):
        if not config.get(required):
            raise VidlightError(f"{path}: {required} is not set; add --set {required}=...")
    return config


def run_pipeline(config: dict, *, progress: bool = True) -> RunStats:
    """Run a loaded pipeline definition (a folder of videos as source: each one, into a folder)."""
    run = enhance_folder if videos_in(config["source"]) else enhance_video
    return run(**{KEYS[k]: v for k, v in config.items()}, progress=progress)


# Keys of a many-stream definition (``vidlight serve``): the model and how it runs are shared
# by every stream; the rest are per stream, and at the top level they are every stream's default.
SHARED_KEYS = ("model", "weights", "device", "batch_size", "fp16", "tile", "tile_overlap", "smooth",
               "smooth_time", "denoise", "strength", "options")
STREAM_KEYS = tuple(k for k in KEYS if k not in SHARED_KEYS)


def load_serve_config(path: str | os.PathLike, overrides: list[str] = ()) -> tuple[dict, list]:
    """Read a many-stream definition: shared keys and stream defaults at the top level, one
    ``[[streams]]`` table per stream (``name``, ``source``, ``sink`` and any stream key).
    ``overrides`` (``KEY=VALUE``) apply to the top level.

    Returns:
        the :func:`vidlight.pipeline.serve.serve` keyword arguments, and its list of streams.
    """
    from vidlight.pipeline.serve import Stream

    path = Path(path)
    config = _read_toml(path)
    _override(config, overrides)
    tables = config.pop("streams", None)
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise VidlightError(f"{path}: no streams; add a [[streams]] table with a source and a sink for each camera")
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise VidlightError(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(KEYS)}, streams")
    defaults = {k: v for k, v in config.items() if k in STREAM_KEYS}
    streams = []
    for n, table in enumerate(tables, 1):
        name = str(table.get("name") or f"stream{n}")
        for key in table:
            if key in SHARED_KEYS:
                raise VidlightError(f"{path}: stream {name!r} sets {key!r}, which every stream shares (one model "
                                    f"on one device); set it at the top level")
            if key not in STREAM_KEYS and key != "name":
                raise VidlightError(f"{path}: stream {name!r}: unknown key {key!r}; valid keys: name, "
                                    f"{', '.join(STREAM_KEYS)}")
        merged = {**defaults, **{k: v for k, v in table.items() if k != "name"}}
        for required in ("source", "sink"):
            if not merged.get(required):
                raise VidlightError(f"{path}: stream {name!r} has no {required}")
        streams.append(Stream(name=name, **{(k if k in ("source", "sink") else KEYS[k]): v for k, v in merged.items()}))
    shared = {KEYS[k]: v for k, v in config.items() if k in SHARED_KEYS}
    return shared, streams
