"""The ``vidlight`` command line. Thin: parse, call the library, report."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from vidlight.allocator import keep_freed_memory
from vidlight.errors import VidlightError
from vidlight.models import get_model_spec, list_models
from vidlight.settings import Field, SettingError, Settings, fields
from vidlight.weights import find_local, list_weights


class _OneLineErrors(click.Group):
    """Turns user-fixable errors into one line on stderr and exit status 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VidlightError as exc:
            from vidlight.pipeline.runner import Interrupted

            click.echo(f"vidlight: {exc}", err=True)
            sys.exit(130 if isinstance(exc, Interrupted) else 1)
        except KeyboardInterrupt:  # outside the pipeline's own handling (loading, opening): nothing written
            click.echo("vidlight: interrupted after 0 frames: nothing was written", err=True)
            sys.exit(130)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidlight")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors (no progress bar).")
def main(quiet: bool) -> None:
    """Enhance dark video with published low-light methods."""
    _log_level(click.get_current_context(), logging.ERROR if quiet else logging.INFO)
    keep_freed_memory()  # this process is vidlight's: its arrays reuse freed memory


def _click_type(f: Field):
    meta = f.meta
    if meta["choices"]:
        return click.Choice(meta["choices"], case_sensitive=False) if f.name != "model" else None
    if meta["kind"] is int:
        return click.IntRange(min=meta["minimum"], max=meta["maximum"])
    if meta["kind"] is float:
        low = meta["above"] if meta["above"] is not None else meta["minimum"]
        return click.FloatRange(min=low, max=meta["maximum"], min_open=meta["above"] is not None)
    return None


def _model_option_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """``-o`` takes KEY=VALUE; a value without ``=`` is most likely an output path given as
    other tools take it (``-o out.mp4``), which vidlight takes as the second argument."""
    for value in values:
        if "=" not in value:
            raise click.BadParameter(
                f"{value!r} is not KEY=VALUE: -o/--option sets a model option (e.g. -o scale_factor=12); "
                f"the output is the second argument: vidlight process IN OUT",
                param_hint="-o/--option",
            )
    return values


def settings_options(*groups: str, defaults: dict | None = None, hidden: tuple[str, ...] = ()):
    """Click options for the settings fields of ``groups``, named, explained and defaulted as
    :mod:`vidlight.settings` says (``defaults`` changes a default for this command; ``hidden``
    fields are accepted but not shown in its help, for a command that takes them otherwise)."""

    def decorate(command: Callable) -> Callable:
        for f in reversed(list(fields(*groups))):
            default = (defaults or {}).get(f.name, f.default)
            help_text = f.meta["help"]
            if f.meta["default_text"]:
                help_text += f" [default: {f.meta['default_text']}]"
            kwargs: dict = dict(help=help_text, metavar=f.meta["metavar"])
            if f.name == "overwrite":
                kwargs.update(is_flag=True)
            elif f.name == "model_options":
                kwargs.update(multiple=True, callback=_model_option_pairs)
            else:
                kwargs.update(
                    default=default,
                    show_default=default is not None and not f.meta["default_text"],
                    type=_click_type(f),
                )
            if f.name == "model":
                kwargs["help"] += " Models: " + ", ".join(list_models()) + "."
            command = click.option(*f.flags, f.name, hidden=f.name in hidden, **kwargs)(command)
        return command

    return decorate


def _quiet() -> bool:
    """Whether ``-q`` was given (``vidlight -q CMD`` or ``vidlight CMD -q``): errors only, no
    progress bar either."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and (ctx.find_root().params.get("quiet") or ctx.meta.get("vidlight.quiet")))


def _log_level(ctx: click.Context, level: int) -> None:
    """Log at ``level`` while ``ctx`` runs, and as before once it ends (a program or a test
    that invokes the command line in its own process keeps its logging)."""
    logging.basicConfig(format="vidlight: %(message)s")
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    ctx.call_on_close(lambda: root.setLevel(previous))


def _key_values(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """--set's values, each KEY=VALUE (a usage error otherwise)."""
    for pair in value:
        key, sep, _ = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE, e.g. --set crf=20")
    return value


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["vidlight.quiet"] = True
        _log_level(ctx, logging.ERROR)


# ``-q`` after the command as well as before it.
quiet_option = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_set_quiet,
    help="Only print errors (no progress bar).",
)


def _settings(options: dict, **fixed) -> Settings:
    """The settings of a command's options; a bad value is a usage error naming its flag."""
    if _quiet() and "progress" in options:
        options = {**options, "progress": False}
    try:
        return Settings.from_options(**options, **fixed)
    except SettingError as exc:
        flag = next((f.flags[-1].split("/")[0] for f in fields() if f.name == exc.name), None)
        raise click.BadParameter(str(exc), param_hint=flag) from None


@main.command()
@quiet_option
@click.argument("source")
@click.argument("sink")
@settings_options("engine", "temporal", "encoder", "source", "run")
def process(source, sink, **options):
    """Enhance SOURCE into SINK.

    \b
    SOURCE: a video file, rtsp:// rtmp:// http(s):// stream, webcam (/dev/video0), picture, folder
            of images, or folder of videos (each is enhanced into the SINK folder under its own name).
    SINK:   a video file, an rtsp:// URL to publish to, a folder (out/ or out/{index:06d}.png),
            a picture (out.png, for a photo), or null.

    Files keep their audio, subtitles, timestamps and colour tags. Live sources are reconnected
    when they drop and run until --duration, --max-frames, Ctrl-C or SIGTERM; the output is
    finalised and playable either way.
    """
    from vidlight.pipeline.folder import enhance_folder, videos_in
    from vidlight.pipeline.runner import enhance_video

    settings = _settings(options)
    run = enhance_folder if videos_in(source) else enhance_video  # a folder of videos -> a folder
    with _stop_on_sigterm():
        stats = run(source, sink, settings)

    if stats.frames or run is not enhance_folder:  # a batch with nothing left to do said so
        logging.getLogger("vidlight").info("wrote %s: %s", _written_to(sink, settings), stats.summary())


def _written_to(sink: str, settings: Settings) -> str:
    """The output for the closing line: a segmented one's segment names."""
    from vidlight.io.live import redact

    target = redact(str(sink))
    if settings.encoder.segment_seconds is not None and "%" not in target:
        named = Path(target)
        target = str(named.with_name(f"{named.stem}_*{named.suffix}"))
    return target


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM (a service manager stopping us) ends the run as Ctrl-C does: output finalised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command()
@quiet_option
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-s",
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_key_values,
    help="Override a key of the definition, e.g. --set source=in.mp4 (repeatable).",
)
@click.option("-y", "--overwrite", is_flag=True, help="Replace an existing output (as --set overwrite=true).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(pipeline, overrides, overwrite, no_progress):
    """Run a pipeline definition (TOML), e.g. pipelines/file-to-file.toml."""
    from vidlight.pipeline.config import load_pipeline, run_pipeline
    from vidlight.pipeline.folder import videos_in

    if overwrite:
        overrides = (*overrides, "overwrite=true")

    given = {o.partition("=")[0].strip() for o in overrides}
    try:
        definition = load_pipeline(pipeline, list(overrides))
    except SettingError as exc:
        # a bad key or value given with --set is a usage error; one in the file is the file's
        if exc.name in given or (exc.name == "model_options" and any(k.startswith("options.") for k in given)):
            raise click.BadParameter(str(exc), param_hint="--set") from None
        raise
    with _stop_on_sigterm():
        stats = run_pipeline(definition, **({"progress": False} if no_progress or _quiet() else {}))
    if stats.frames or not videos_in(definition.source):  # a batch with nothing left to do said so
        logging.getLogger("vidlight").info(
            "wrote %s: %s", _written_to(definition.sink, definition.settings), stats.summary()
        )


@main.command()
@quiet_option
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-s",
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_key_values,
    help="Override a top-level key (shared, or every stream's default), e.g. --set device=cuda.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    help="local: every stream in this process; ray: the streams spread over Ray workers, each "
    "serving its share (RAY_ADDRESS, else a local cluster). [default: the config's, else local]",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Ray workers for --executor ray. [default: one per GPU of the cluster, else one per CPU]",
)
def serve(config, overrides, executor, workers):
    """Enhance several cameras in one process (TOML, e.g. pipelines/multi-camera.toml).

    One model on one device; its batches hold frames of every stream, and each stream keeps its
    own smoothing, reconnects and sink. Runs until every stream ends, or Ctrl-C / SIGTERM, which
    finalise every output. A stream that fails does not stop the others; the exit status is
    then 1. With --executor ray the streams are spread over Ray workers; a worker that dies is
    started again with its cameras.
    """
    from vidlight.pipeline.config import load_serve_config
    from vidlight.pipeline.serve import serve as serve_streams

    for pair in overrides:
        if pair.partition("=")[0].strip() in ("source", "sink", "streams"):
            raise click.BadParameter(
                f"{pair.partition('=')[0].strip()} is each stream's own: set it in the stream's [[streams]] table",
                param_hint="--set",
            )
    shared, streams = load_serve_config(config, list(overrides))
    shared = shared.replace(**{k: v for k, v in (("executor", executor), ("workers", workers)) if v is not None})
    with _stop_on_sigterm():
        if shared.run.executor == "ray":
            from vidlight.scale.cameras import serve_on_ray

            report = serve_on_ray(streams, shared)
        else:
            report = serve_streams(streams, shared)
    logging.getLogger("vidlight").info("%s", report.summary())
    if report.failures:
        raise VidlightError(
            f"{len(report.failures)} of {len(streams)} streams failed: "
            + "; ".join(f"{name}: {error}" for name, error in report.failures.items())
        )


@main.command()
@quiet_option
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--models",
    "model_names",
    default="sci,zero-dce++",
    show_default=True,
    metavar="NAME,NAME,...",
    help="Models to compare, separated by commas.",
)
@click.option(
    "--strengths",
    default="auto",
    show_default=True,
    metavar="auto|0..1,...",
    help="Strengths to compare each model at, separated by commas.",
)
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    default=150,
    show_default=True,
    help="Compare on this many frames from the start.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Frames shown with a before/after slider.",
)
@click.option(
    "--out",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML page to write. [default: VIDEO's name + -compare.html, here]",
)
@settings_options("engine", "temporal", defaults={"model": "sci"}, hidden=("model", "strength"))
def compare(video, model_names, strengths, frames, samples, output, **options):
    """Compare models on VIDEO in one self-contained HTML page.

    Before/after sliders on sampled frames for each model (and strength), plots of mean luma
    and flicker over time, and the time each model took: pick a model by looking.
    """
    from vidlight.compare import compare as run_compare

    options.pop("model")
    ctx = click.get_current_context()
    if ctx.get_parameter_source("model") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("compare takes its models as --models NAME,NAME (not -m/--model)")
    if ctx.get_parameter_source("strength") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("compare takes its strengths as --strengths S,S (not --strength)")
    names = [n.strip() for n in model_names.split(",") if n.strip()]
    for name in names:  # any case, "did you mean" on a typo
        try:
            Settings.from_options(model=name)
        except SettingError as exc:
            raise click.BadParameter(str(exc), param_hint="--models") from None
    # The settings around the first model: -o options are checked against each model's.
    settings = _settings({**options, "model": names[0]} if names else options, progress=False)
    values = [v.strip() for v in strengths.split(",") if v.strip()]
    for value in values:
        try:
            Settings.from_options(strength=value)
        except SettingError as exc:
            raise click.BadParameter(str(exc), param_hint="--strengths") from None
    output = output or Path(f"{video.stem}-compare.html")
    with _stop_on_sigterm():
        run_compare(
            video, output, names, strengths=values, frames=frames, samples=samples, settings=settings, log=click.echo
        )


@main.command()
def models():
    """List the models, their weights, licenses, and whether the weights are here."""
    for name in list_models():
        spec = get_model_spec(name)
        click.echo(f"{name}: {spec.summary}")
        for key, text in spec.options.items():
            click.echo(f"    option {key}: {text}")
        for w in list_weights(name):
            default = " (default)" if w.name == spec.default_weights else ""
            where = find_local(w)
            if where:
                status = f"available: {where}"
            elif w.url:
                status = "downloadable"
            else:
                status = (
                    f"fetch by hand from {w.manual[0]} into $VIDLIGHT_WEIGHTS_DIR/{w.relpath}"
                    if w.manual
                    else "not available"
                )
            lol = w.metrics.get("lol_eval15")
            score = f", LOL eval15 {lol['psnr']:.2f} dB / SSIM {lol['ssim']:.3f}" if lol else ""
            click.echo(f"  - {w.name}{default}: {w.license}{score}; {status}")


@main.group()
def train():
    """Train a model with vidlight's own code."""


@train.command("mbllen-video")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of normal-light images, or one with a high/ subfolder (LOL layout); dark clips are "
    "synthesised from them, every 10th file (sorted) is held out for checkpoint selection.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write.")
@click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--crop", type=click.IntRange(min=16), default=64, show_default=True, help="Training clip side, pixels.")
@click.option("--frames", type=click.IntRange(min=1), default=6, show_default=True, help="Frames per training clip.")
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True, help="Clips per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--eval-clips",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Held-out clips (96 x 96, 8 frames) scored for checkpoint selection.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads (results are bit-identical for a given seed and thread count).",
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON training report here.")
def train_mbllen_video_command(
    data, out, iterations, crop, frames, batch_size, lr, eval_every, eval_clips, seed, threads, report
):
    """MBLLEN video variant (3D convolutions) on synthetic dark clips: structure + region losses."""
    from vidlight.train.mbllen_video import MBLLENVideoTrainConfig, train_mbllen_video

    cfg = MBLLENVideoTrainConfig(
        str(data),
        str(out),
        iterations=iterations,
        crop=crop,
        frames=frames,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        eval_clips=eval_clips,
        seed=seed,
        threads=threads,
        report=str(report) if report else None,
    )
    result = train_mbllen_video(cfg, log=click.echo)
    click.echo(
        f"best held-out PSNR {result['best']['psnr']:.3f} dB at iteration {result['best']['iteration']}; wrote {out}"
    )


@train.command("sci")
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder with low/ (training images) and high/ (used only for held-out checkpoint selection).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write.")
@click.option("--iterations", type=click.IntRange(min=1), default=20000, show_default=True)
@click.option("--crop", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Torch threads (results are bit-identical for a given seed and thread count).",
)
def train_sci_command(data, out, iterations, crop, batch_size, lr, eval_every, seed, threads):
    """Zero-reference SCI training (fidelity + smoothness losses, self-calibrated stages)."""
    from vidlight.train.sci import SCITrainConfig, train_sci

    cfg = SCITrainConfig(
        str(data),
        str(out),
        iterations=iterations,
        crop=crop,
        batch_size=batch_size,
        lr=lr,
        eval_every=eval_every,
        seed=seed,
        threads=threads,
    )
    report = train_sci(cfg, log=click.echo)
    click.echo(
        f"best held-out PSNR {report['best']['psnr']:.3f} dB at iteration {report['best']['iteration']}; wrote {out}"
    )


@main.command("eval")
@quiet_option
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("outputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-l",
    "--label",
    "labels",
    multiple=True,
    metavar="NAME",
    help="Name of a video in the table and plot, once per video: INPUT first, then each OUTPUT. [default: file names]",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG line chart of every video's per-frame mean luma here.",
)
@click.option("--max-frames", type=click.IntRange(min=1), help="Measure at most this many frames.")
@click.option("--no-warp", is_flag=True, help="Skip the warping error (its optical flow is the slow part).")
@click.option(
    "--downscale",
    type=click.IntRange(min=1),
    help="Measure the warping error at 1/N of the frame size. [default: the smallest N that gives at most 540 lines]",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(input, outputs, labels, plot, max_frames, no_warp, downscale, no_progress):
    """Flicker of the dark video INPUT and of enhanced versions OUTPUT... of it.

    Each is a video file or a folder of images (read in natural order).

    Prints per video: frames, mean luma (BT.601, 0-255), flicker index (mean |change of mean
    luma| between frames / mean luma) and warping error (Lai et al. 2018, with the optical
    flow of INPUT).
    """
    from vidlight.evaluate import check_plot_path, evaluate_videos, format_table, plot_luma

    if plot is not None:
        check_plot_path(plot)
    results = evaluate_videos(
        input,
        outputs,
        labels=labels or None,
        max_frames=max_frames,
        warping=not no_warp,
        downscale=downscale,
        progress=not (no_progress or _quiet()),
    )
    click.echo(format_table(results))
    if plot is not None:
        plot_luma({r.label: r.lumas for r in results}, plot)
        click.echo(f"wrote {plot}")


@main.command()
@quiet_option
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--height", type=click.IntRange(min=16), help="Scale the clip to this many lines first. [default: its own size]"
)
@click.option(
    "--frames",
    "frames",
    type=click.IntRange(min=1),
    default=180,
    show_default=True,
    help="Use at most this many frames.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Interleaved rounds; each figure is the median.",
)
@settings_options("engine", "temporal", "encoder")
def bench(video, height, frames, repeat, **options):
    """Measure fps of the I/O floor, a naive loop, vidlight as process runs it and the model alone, in one run."""
    from vidlight.bench import run_bench

    run_bench(
        video, _settings(options, progress=False), height=height, max_frames=frames, repeat=repeat, log=click.echo
    )


@main.command("bench-models")
@click.option(
    "-m",
    "--model",
    "names",
    multiple=True,
    type=click.Choice(list_models()),
    help="Model to time (repeatable). [default: all]",
)
@click.option("--size", default="600x400", show_default=True, metavar="WxH", help="Frame size.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Timed runs per model after one warm-up; the median is printed.",
)
def bench_models(names, size, device, repeat):
    """Params and milliseconds per frame of each model (and fp16 vs fp32 on CUDA)."""
    from vidlight.bench import model_figures

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH, e.g. 600x400, got {size!r}", param_hint="--size") from None
    model_figures(
        list(names) or list_models(), height=height, width=width, device=device, repeat=repeat, log=click.echo
    )


if __name__ == "__main__":
    main()
