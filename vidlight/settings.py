"""Every setting of a run, in one place: defaults, validation, TOML keys and CLI flags.

A run is described by a :class:`Settings`, five frozen groups along the data path:

* :class:`SourceSettings`: how the source is read (live streams: transport, timeouts, reconnects).
* :class:`EngineSettings`: the model and where and how it runs.
* :class:`TemporalSettings`: the temporal stage (smoothing, denoising, strength).
* :class:`EncoderSettings`: how the output is encoded.
* :class:`RunControl`: how much is run and what happens around it.

The command line's flags, the TOML keys of ``vidlight run``/``vidlight serve``, the keyword
arguments of :func:`vidlight.enhance_video` and :func:`vidlight.pipeline.serve.serve` and the
Ray workers all go through these classes, so a default or a check is written once. Each field
carries its TOML key, its flags and its help text as metadata; the CLI builds its options
from them.

    >>> from vidlight.settings import Settings
    >>> settings = Settings.from_options(model="zero-dce++", crf=20, strength=0.5)
    >>> settings.engine.model, settings.encoder.crf, settings.temporal.strength
    ('zero-dce++', 20, 0.5)
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from vidlight.errors import VidlightError
from vidlight.pipeline.exposure import parse_strength
from vidlight.pipeline.temporal import DEFAULT_TIME_CONSTANT
from vidlight.pipeline.tiling import DEFAULT_OVERLAP, parse_tile


class SettingError(VidlightError):
    """A setting with a value it cannot take; ``name`` is the field's name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def setting(
    default: Any = None,
    *,
    help: str,
    kind: type | None = None,
    key: str | None = None,
    flags: tuple[str, ...] | None = None,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    metavar: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    default_text: str | None = None,
    optional: bool = False,
) -> Any:
    """A settings field: its default and how it is named, checked and explained.

    Args:
        default: the value when not set.
        help: one or two sentences for ``--help`` and the docs.
        kind: the type of a set value (bool, int, float, str); None when ``parse`` checks it.
        key: the TOML key (default: the field's name).
        flags: the CLI declarations (default: ``--field-name``; ``--x/--no-x`` for a bool).
        choices: the values a string may take.
        minimum, above, maximum: bounds of a number (``above``: exclusive).
        metavar: the value's placeholder in ``--help``.
        parse: turns a set value into the stored one (raises :class:`VidlightError`).
        default_text: how ``--help`` shows a default that depends on the run.
        optional: None may be set (it is allowed anyway when it is the default).
    """
    return field(
        default=default,
        metadata=dict(
            help=help,
            kind=kind,
            key=key,
            flags=flags,
            choices=choices,
            minimum=minimum,
            above=above,
            maximum=maximum,
            metavar=metavar,
            parse=parse,
            default_text=default_text,
            optional=optional or default is None,
        ),
    )


def _parse_device(value: Any) -> Any:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a ``torch.device``; whether the device exists is
    checked when a run starts."""
    text = str(value).strip().lower()
    kind, _, index = text.partition(":")
    if text == "auto" or (kind in ("cpu", "cuda") and (not index or index.isdigit())):
        return value if not isinstance(value, str) else text
    raise VidlightError(f"unknown device {str(value)!r}: use auto, cpu, cuda or cuda:N")


def _parse_model(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # a loaded model (the Python API)
    from vidlight.models import list_models

    names = list_models()
    if value in names:
        return value
    folded = {n.lower(): n for n in names}
    if value.strip().lower() in folded:
        return folded[value.strip().lower()]
    close = difflib.get_close_matches(value.strip().lower(), list(folded), n=1)
    hint = f"; did you mean {folded[close[0]]}?" if close else ""
    raise VidlightError(f"unknown model {value!r}{hint} (valid: {', '.join(names)})")


def _parse_duration(value: Any) -> float | None:
    if value is None:
        return None
    from vidlight.io.sinks import parse_duration

    return parse_duration(value)


def parse_value(text: str) -> Any:
    """A ``KEY=VALUE`` value as TOML reads it (``20``, ``1.5``, ``true``, ``"x"``), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_pairs(pairs: Any, what: str = "option") -> dict:
    """``KEY=VALUE`` strings (or a mapping, kept as it is) as a dict of TOML-read values."""
    if pairs is None:
        return {}
    if isinstance(pairs, dict):
        return dict(pairs)
    if isinstance(pairs, str):
        pairs = [pairs]
    out = {}
    for pair in pairs:
        key, sep, text = str(pair).partition("=")
        if not sep or not key.strip():
            raise VidlightError(f"a {what} is KEY=VALUE, got {pair!r}")
        out[key.strip()] = parse_value(text)
    return out


@dataclass(frozen=True)
class SourceSettings:
    """How the source is read: live streams' transport, timeouts and reconnects; image folders' rate."""

    transport: str = setting(
        "tcp", kind=str, choices=("tcp", "udp"), help="RTSP transport, for rtsp:// sources and sinks."
    )
    open_timeout_seconds: float = setting(
        10.0,
        kind=float,
        above=0,
        key="open_timeout",
        metavar="SECONDS",
        help="Give up opening a stream that does not answer.",
    )
    read_timeout_seconds: float = setting(
        5.0,
        kind=float,
        above=0,
        key="read_timeout",
        metavar="SECONDS",
        help="Treat a stream that sends nothing for this long as disconnected.",
    )
    reconnect: bool = setting(
        True, kind=bool, help="Reconnect a live source that drops, with capped exponential backoff."
    )
    max_reconnects: int | None = setting(
        None, kind=int, minimum=0, metavar="N", default_text="never", help="Give up after N failed attempts in a row."
    )
    latest_frame: bool | None = setting(
        None,
        kind=bool,
        flags=("--latest-frame/--all-frames",),
        default_text="latest-frame for live sources, all frames for files",
        help="When enhancement falls behind, skip to the newest frame (counted as dropped).",
    )
    fps: float = setting(25.0, kind=float, above=0, help="Frame rate of a folder of images.")
    sequence: bool = setting(
        False,
        kind=bool,
        flags=("--sequence/--stills",),
        help=(
            "Read a folder of images as the frames of one video (smoothing, the exposure control "
            "and clip models follow them over time), not as unrelated pictures each enhanced on its own."
        ),
    )


@dataclass(frozen=True)
class EngineSettings:
    """The model, its weights and options, and where and how it runs."""

    model: Any = setting(
        "sci", parse=_parse_model, flags=("-m", "--model"), help="Enhancement method (any case; see `vidlight models`)."
    )
    weights: str | None = setting(
        None,
        kind=str,
        flags=("-w", "--weights"),
        default_text="the model's",
        help="Catalogue name (see `vidlight models`) or checkpoint path.",
    )
    model_options: dict | None = setting(
        None,
        parse=lambda v: parse_pairs(v) or None,
        key="options",
        flags=("-o", "--option"),
        metavar="KEY=VALUE",
        help="Model option, e.g. -o scale_factor=12 (see `vidlight models`); repeatable.",
    )
    device: Any = setting(
        "auto",
        parse=_parse_device,
        choices=("auto", "cpu", "cuda"),
        help="Where the model runs; auto uses CUDA when available.",
    )
    batch_size: int | None = setting(
        None,
        kind=int,
        minimum=1,
        flags=("-b", "--batch-size"),
        default_text="4 on CPU, 8 on CUDA",
        help="Frames per model call.",
    )
    fp16: bool | None = setting(
        None,
        kind=bool,
        flags=("--fp16/--fp32",),
        default_text="fp16 on CUDA unless the model needs fp32, fp32 on CPU",
        help="Half precision on CUDA.",
    )
    tile: int | str = setting(
        "auto",
        parse=parse_tile,
        metavar="auto|off|PIXELS",
        help="Run the model on overlapping tiles of this side; auto tiles only frames that "
        "would not fit in the free memory.",
    )
    tile_overlap: int = setting(
        DEFAULT_OVERLAP, kind=int, minimum=0, help="Pixels shared by neighbouring tiles (blended)."
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model_options:
            return
        from vidlight.models import get_model_spec

        known = get_model_spec(self.model).option_defaults()
        unknown = sorted(set(self.model_options) - set(known))
        if unknown:
            raise SettingError(
                "model_options",
                f"{self.model} has no option {unknown[0]!r}{did_you_mean(unknown[0], known)}; "
                f"its options: {', '.join(known) or 'none'} (see `vidlight models`)",
            )


@dataclass(frozen=True)
class TemporalSettings:
    """The temporal stage: brightness smoothing, denoising and the method's strength."""

    smooth: bool = setting(
        True,
        kind=bool,
        help="Smooth the output's brightness over time (removes flicker; restarts at scene cuts and reconnects).",
    )
    smooth_time: float = setting(
        DEFAULT_TIME_CONSTANT, kind=float, above=0, metavar="SECONDS", help="Time constant of the smoothing."
    )
    denoise: bool = setting(
        False,
        kind=bool,
        help="Also average each pixel with its past where the picture did not change (lowers "
        "the noise enhancement amplifies; needs --smooth).",
    )
    strength: float | str = setting(
        "auto",
        parse=parse_strength,
        metavar="auto|0..1",
        help="How much of the method each frame gets: auto chooses from the scene (a "
        "well-lit frame passes nearly unchanged, a near-black one gets the full "
        "method); 0 is the input, 1 the method's own output.",
    )

    def __post_init__(self) -> None:
        if self.denoise and not self.smooth:
            raise SettingError(
                "denoise",
                "denoising runs in the smoothing stage: turn smoothing on (drop --no-smooth) or denoising off",
            )


# Named when --codec is not an encoder; the GPU ones need NVIDIA's driver.
COMMON_ENCODERS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc")
X264_PRESETS = (
    *("ultrafast", "superfast", "veryfast", "faster", "fast"),
    *("medium", "slow", "slower", "veryslow", "placebo"),
)


@dataclass(frozen=True)
class EncoderSettings:
    """How the output is encoded and cut into files."""

    codec: str = setting(
        "libx264", kind=str, help="FFmpeg video encoder; h264_nvenc or hevc_nvenc encode on an NVIDIA GPU."
    )
    crf: int | None = setting(
        18, kind=int, optional=True, minimum=0, maximum=63, help="Encoder quality (lower is better)."
    )
    preset: str | None = setting(
        "veryfast", kind=str, optional=True, help="Encoder speed preset (e.g. veryfast, medium, slow)."
    )
    segment_seconds: float | None = setting(
        None,
        parse=_parse_duration,
        key="segment",
        metavar="DURATION",
        help="Record into consecutive files of this length, e.g. 10m, 90s, 1h.",
    )

    def __post_init__(self) -> None:
        import av

        try:
            # the default is left to the encoder's opening, so that runs that encode nothing
            # (pictures, null, the frame iterator) do not need it in FFmpeg's build
            video = self.codec == "libx264" or av.codec.Codec(self.codec, "w").type == "video"
        except (av.error.FFmpegError, ValueError):  # PyAV raises UnknownCodecError, a ValueError
            video = False
        if not video:
            raise SettingError(
                "codec",
                f"{self.codec!r} is not a video encoder here{did_you_mean(self.codec, COMMON_ENCODERS)}; "
                f"common ones: {', '.join(COMMON_ENCODERS)}",
            )
        preset = (self.preset or "").lower()
        numbered = preset.isdigit() and int(preset) < len(X264_PRESETS)  # x264 takes 0-9 too
        if self.codec in ("libx264", "libx265") and preset and preset not in X264_PRESETS and not numbered:
            raise SettingError(
                "preset",
                f"{self.codec} has no preset {self.preset!r}{did_you_mean(preset, X264_PRESETS)}; "
                f"its presets: {', '.join(X264_PRESETS)} (any case), or 0-9",
            )


@dataclass(frozen=True)
class RunControl:
    """How much of the source is run, and what the run does around it."""

    max_frames: int | None = setting(None, kind=int, minimum=1, help="Stop after this many frames.")
    duration_seconds: float | None = setting(
        None,
        kind=float,
        above=0,
        key="duration",
        metavar="SECONDS",
        help="Stop after this many seconds of the source (for live sources).",
    )
    overwrite: bool = setting(False, kind=bool, flags=("-y", "--overwrite"), help="Replace the output if it exists.")
    progress: bool = setting(True, kind=bool, help="Show a progress bar.")
    split_seconds: float | None = setting(
        None,
        parse=_parse_duration,
        key="split",
        metavar="DURATION",
        default_text="no split; 1m with --executor ray",
        help="Cut a video file at keyframes into parts of about this length, "
        "e.g. 5m: an interrupted run resumes from its last finished part, "
        "and with --executor ray the parts run in parallel.",
    )
    executor: str = setting(
        "local",
        kind=str,
        choices=("local", "ray"),
        help="Where a folder of videos runs: local (here, one video after another) or ray "
        "(on the Ray cluster RAY_ADDRESS names, else a local one; needs "
        "pip install 'vidlight[ray]').",
    )
    workers: int | None = setting(
        None,
        kind=int,
        minimum=1,
        metavar="N",
        default_text="one per GPU of the cluster, else one per CPU",
        help="Ray workers for --executor ray; each loads the model once.",
    )


GROUPS = {
    "source": SourceSettings,
    "engine": EngineSettings,
    "temporal": TemporalSettings,
    "encoder": EncoderSettings,
    "run": RunControl,
}


@dataclass(frozen=True)
class Settings:
    """All settings of a run, grouped along the data path. Build it with :meth:`from_options`
    (flat field names, as keyword arguments) or :meth:`from_keys` (TOML keys)."""

    source: SourceSettings = field(default_factory=SourceSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    temporal: TemporalSettings = field(default_factory=TemporalSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    run: RunControl = field(default_factory=RunControl)

    @classmethod
    def from_options(cls, **options: Any) -> Settings:
        """Settings from field names (``model="sci", crf=20``); the rest are defaults."""
        return cls().replace(**options)

    @classmethod
    def from_keys(cls, keys: dict, *, where: str = "", also: Sequence[str] = ()) -> Settings:
        """Settings from TOML keys (``duration``, ``options``, ...); ``also``: the file's other
        valid keys (``source``, ``sink``), named in the message for an unknown key."""
        by_key = {f.key: f.name for f in fields()}
        options = {}
        for key, value in keys.items():
            if key not in by_key:
                valid = [*also, *by_key]
                raise SettingError(
                    key, f"{where}unknown key {key!r}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
                )
            options[by_key[key]] = value
        try:
            return cls().replace(**options)
        except SettingError as exc:
            raise SettingError(exc.name, f"{where}{exc}") from None

    def replace(self, **options: Any) -> Settings:
        """A copy with the named fields changed (by field name, or by the CLI's and TOML's key
        where that differs: ``duration`` for ``duration_seconds``); :class:`SettingError` for an
        unknown name, a field named twice or a bad value."""
        groups: dict[str, dict] = {}
        known = {f.name: f.group for f in fields()}
        given_as: dict[str, str] = {}  # field name -> the name it was given by
        for given, value in options.items():
            name = field_name(given)
            if name not in known:
                raise SettingError(given, f"unknown setting {given!r}{did_you_mean(given, [*known, *_KEYS])}")
            if name in given_as:
                raise SettingError(name, f"{given_as[name]!r} and {given!r} are the same setting; give one of them")
            given_as[name] = given
            groups.setdefault(known[name], {})[name] = check(name, value)
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **changes) for group, changes in groups.items()}
        )

    def options(self) -> dict:
        """Every field by name (the inverse of :meth:`from_options`)."""
        return {f.name: getattr(getattr(self, f.group), f.name) for f in fields()}


@dataclass(frozen=True)
class Field:
    """One settings field as the CLI, TOML and docs see it."""

    name: str
    group: str
    default: Any
    key: str
    flags: tuple[str, ...]
    meta: dict


def fields(*groups: str) -> Iterator[Field]:
    """The settings fields of the named groups, in that order (default: all, in data-path order)."""
    for group in groups or tuple(GROUPS):
        for f in dataclasses.fields(GROUPS[group]):
            meta = dict(f.metadata)
            flags = meta["flags"] or (
                (f"--{f.name.replace('_', '-')}/--no-{f.name.replace('_', '-')}",)
                if meta["kind"] is bool
                else (f"--{(meta['key'] or f.name).replace('_', '-')}",)
            )
            yield Field(f.name, group, f.default, meta["key"] or f.name, flags, meta)


_FIELDS = {f.name: f for f in fields()}
assert len(_FIELDS) == sum(len(dataclasses.fields(c)) for c in GROUPS.values()), "a field name is used twice"


def check(name: str, value: Any) -> Any:
    """``value`` checked (and normalised) for the field ``name``."""
    meta = _FIELDS[name].meta
    label = _FIELDS[name].key.replace("_", " ")
    if meta["parse"] is not None:
        try:
            return meta["parse"](value)
        except VidlightError as exc:
            raise SettingError(name, str(exc)) from None
    if value is None:
        if meta["optional"]:
            return None
        raise SettingError(name, f"{label} cannot be empty")
    kind = meta["kind"]
    if kind is bool:
        if not isinstance(value, bool):
            raise SettingError(name, f"{label} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise SettingError(
                name, f"{label} must be {'a whole number' if kind is int else 'a number'}, got {value!r}"
            )
        value = kind(value)
        low, above, high = meta["minimum"], meta["above"], meta["maximum"]
        if (
            (low is not None and value < low)
            or (above is not None and not value > above)
            or (high is not None and value > high)
        ):
            bound = f"at least {low:g}" if low is not None else f"above {above:g}"
            bound += f" and at most {high:g}" if high is not None else ""
            unit = " seconds" if meta["metavar"] == "SECONDS" else ""
            raise SettingError(name, f"{label} must be {bound}{unit}, got {value!r}")
        return value
    if not isinstance(value, str):
        raise SettingError(name, f"{label} must be text, got {value!r}")
    if meta["choices"] and value not in meta["choices"]:
        raise SettingError(name, f"invalid {label} {value!r}; valid: {', '.join(meta['choices'])}")
    return value


_KEYS = {f.key: f.name for f in fields() if f.key != f.name}  # TOML keys (the flags' names) that differ


def field_name(name: str) -> str:
    """The settings field ``name`` stands for: itself, or the field whose TOML key (and long
    flag's name, with ``_``) it is (``duration`` -> ``duration_seconds``)."""
    return _KEYS.get(name, name)


def did_you_mean(name: str, valid) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``valid`` to a mistyped ``name``, or ""."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
