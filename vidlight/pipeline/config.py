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


def load_pipeline(path: str | os.PathLike, overrides: list[str] = ()) -> dict:
    """Read a pipeline definition and apply ``KEY=VALUE`` overrides (``options.KEY=VALUE`` too)."""
    path = Path(path)
    try:
        config = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise VidlightError(f"pipeline file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise VidlightError(f"{path} is not valid TOML: {exc}") from None
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise VidlightError(f"--set expects KEY=VALUE, got {item!r}")
        if key.startswith("options."):
            config.setdefault("options", {})[key.removeprefix("options.")] = _value(text)
        else:
            config[key] = _value(text)
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
