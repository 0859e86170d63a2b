"""The ``vidlight`` command line. Thin: parse, call the library, report."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

import click

from vidlight.errors import VidlightError
from vidlight.models import get_model_spec, list_models
from vidlight.pipeline.temporal import DEFAULT_TIME_CONSTANT
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
        except KeyboardInterrupt:
            click.echo("vidlight: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidlight")
@click.option("-q", "--quiet", is_flag=True, help="Only print errors.")
def main(quiet: bool) -> None:
    """Enhance dark video with published low-light methods."""
    logging.basicConfig(level=logging.ERROR if quiet else logging.INFO, format="vidlight: %(message)s")


@main.command()
@click.argument("source")
@click.argument("sink")
@click.option("-m", "--model", type=click.Choice(list_models()), default="sci", show_default=True,
              help="Enhancement method.")
@click.option("-w", "--weights", help="Catalogue name (see `vidlight models`) or checkpoint path. [default: the model's]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the model runs; auto uses CUDA when available.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1), help="Frames per model call. [default: 4 on CPU, 8 on CUDA]")
@click.option("--fp16/--fp32", default=None, help="Half precision on CUDA. [default: fp16 on CUDA, fp32 on CPU]")
@click.option("--codec", default="libx264", show_default=True, help="FFmpeg video encoder.")
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True, help="Encoder quality (lower is better).")
@click.option("--preset", default="medium", show_default=True, help="Encoder speed preset (e.g. veryfast, slow).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Model option, e.g. -o scale_factor=12 (see `vidlight models`).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this many seconds of the source (for live sources).")
@click.option("--tile", default="auto", show_default=True, metavar="auto|off|PIXELS",
              help="Run the model on overlapping tiles of this side; auto tiles only frames that would not fit "
                   "in the free memory.")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=64, show_default=True,
              help="Pixels shared by neighbouring tiles (blended).")
@click.option("--smooth/--no-smooth", default=True, show_default=True,
              help="Smooth the output's brightness over time (removes flicker; restarts at scene cuts and "
                   "reconnects).")
@click.option("--smooth-time", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIME_CONSTANT,
              show_default=True, metavar="SECONDS", help="Time constant of the smoothing.")
@click.option("--denoise/--no-denoise", default=False, show_default=True,
              help="Also average each pixel with its past where the picture did not change (lowers the "
                   "noise enhancement amplifies; needs --smooth).")
@click.option("--strength", default="auto", show_default=True, metavar="auto|0..1",
              help="How much of the method each frame gets: auto chooses from the scene (a well-lit frame "
                   "passes nearly unchanged, a near-black one gets the full method); 0 is the input, 1 the "
                   "method's own output.")
@click.option("--transport", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True,
              help="RTSP transport, for rtsp:// sources and sinks.")
@click.option("--open-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              metavar="SECONDS", help="Give up opening a stream that does not answer.")
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="SECONDS", help="Treat a stream that sends nothing for this long as disconnected.")
@click.option("--reconnect/--no-reconnect", default=True, show_default=True,
              help="Reconnect a live source that drops, with capped exponential backoff.")
@click.option("--max-reconnects", type=click.IntRange(min=0), metavar="N",
              help="Give up after N failed attempts in a row. [default: never]")
@click.option("--latest-frame/--all-frames", default=None,
              help="When enhancement falls behind, skip to the newest frame (counted as dropped). "
                   "[default: latest-frame for live sources, all frames for files]")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="Frame rate of a folder of images.")
@click.option("--segment", metavar="DURATION", help="Record into consecutive files of this length, e.g. 10m, 90s, 1h.")
@click.option("-y", "--overwrite", is_flag=True, help="Replace SINK if it exists.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def process(source, sink, model, weights, device, batch_size, fp16, codec, crf, preset, options, max_frames, duration,
            tile, tile_overlap, smooth, smooth_time, denoise, strength, transport, open_timeout, read_timeout, reconnect,
            max_reconnects, latest_frame, fps, segment, overwrite, no_progress):
    """Enhance SOURCE into SINK.

    \b
    SOURCE: a video file, rtsp:// rtmp:// http(s):// stream, webcam (/dev/video0), folder of images,
            or folder of videos (each is enhanced into the SINK folder under its own name).
    SINK:   a video file, an rtsp:// URL to publish to, a folder (out/ or out/{index:06d}.png), or null.

    Files keep their audio, subtitles, timestamps and colour tags. Live sources are reconnected
    when they drop and run until --duration, --max-frames, Ctrl-C or SIGTERM; the output is
    finalised and playable either way.
    """
    from vidlight.pipeline.runner import enhance_folder, enhance_video, videos_in

    if denoise and not smooth:
        raise click.UsageError("--denoise works in the smoothing stage; drop --no-smooth")
    run = enhance_folder if videos_in(source) else enhance_video  # a folder of videos -> a folder
    with _stop_on_sigterm():
        stats = run(
            source, sink, model=model, weights=weights, device=device, batch_size=batch_size, fp16=fp16,
            codec=codec, crf=crf, preset=preset, overwrite=overwrite, progress=not no_progress,
            model_options=_parse_options(options), max_frames=max_frames, duration_seconds=duration,
            tile=_parse_tile(tile), tile_overlap=tile_overlap, smooth=smooth, smooth_time=smooth_time,
            denoise=denoise, strength=_parse_strength(strength), transport=transport,
            open_timeout_seconds=open_timeout, read_timeout_seconds=read_timeout,
            reconnect=reconnect, max_reconnects=max_reconnects, latest_frame=latest_frame, fps=fps,
            segment_seconds=segment,
        )
    from vidlight.io.live import redact

    logging.getLogger("vidlight").info("wrote %s: %s", redact(str(sink)), stats.summary())


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


def _parse_tile(value: str) -> int | str:
    from vidlight.pipeline.tiling import parse_tile

    try:
        return parse_tile(value)
    except VidlightError as exc:
        raise click.BadParameter(str(exc).removeprefix("--tile "), param_hint="--tile") from None


def _parse_strength(value: str) -> float | str:
    from vidlight.pipeline.exposure import parse_strength

    try:
        return parse_strength(value)
    except VidlightError as exc:
        raise click.BadParameter(str(exc).removeprefix("strength "), param_hint="--strength") from None


def _parse_options(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="-o/--option")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        out[key] = value
    return out


@main.command()
@click.argument("pipeline", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the definition, e.g. --set source=in.mp4 (repeatable).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(pipeline, overrides, no_progress):
    """Run a pipeline definition (TOML), e.g. pipelines/file-to-file.toml."""
    from vidlight.pipeline.config import load_pipeline, run_pipeline

    from vidlight.io.live import redact

    config = load_pipeline(pipeline, list(overrides))
    with _stop_on_sigterm():
        stats = run_pipeline(config, progress=not no_progress)
    logging.getLogger("vidlight").info("wrote %s: %s", redact(str(config["sink"])), stats.summary())


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-s", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a top-level key (shared, or every stream's default), e.g. --set device=cuda.")
def serve(config, overrides):
    """Enhance several cameras in one process (TOML, e.g. pipelines/multi-camera.toml).

    One model on one device; its batches hold frames of every stream, and each stream keeps its
    own smoothing, reconnects and sink. Runs until every stream ends, or Ctrl-C / SIGTERM, which
    finalise every output. A stream that fails does not stop the others; the exit status is
    then 1.
    """
    from vidlight.pipeline.config import load_serve_config
    from vidlight.pipeline.serve import serve as serve_streams

    shared, streams = load_serve_config(config, list(overrides))
    with _stop_on_sigterm():
        report = serve_streams(streams, **shared)
    logging.getLogger("vidlight").info("%s", report.summary())
    if report.failures:
        raise VidlightError(f"{len(report.failures)} of {len(streams)} streams failed: "
                            + "; ".join(f"{name}: {error}" for name, error in report.failures.items()))


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
                status = f"fetch by hand from {w.manual[0]} into $VIDLIGHT_WEIGHTS_DIR/{w.relpath}" if w.manual else "not available"
            lol = w.metrics.get("lol_eval15")
            score = f", LOL eval15 {lol['psnr']:.2f} dB / SSIM {lol['ssim']:.3f}" if lol else ""
            click.echo(f"  - {w.name}{default}: {w.license}{score}; {status}")


@main.group()
def train():
    """Train a model with vidlight's own code."""


@train.command("mbllen-video")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of normal-light images, or one with a high/ subfolder (LOL layout); dark clips are "
                   "synthesised from them, every 10th file (sorted) is held out for checkpoint selection.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write.")
@click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--crop", type=click.IntRange(min=16), default=64, show_default=True, help="Training clip side, pixels.")
@click.option("--frames", type=click.IntRange(min=1), default=6, show_default=True, help="Frames per training clip.")
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True, help="Clips per step.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--eval-clips", type=click.IntRange(min=1), default=8, show_default=True,
              help="Held-out clips (96 x 96, 8 frames) scored for checkpoint selection.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch threads (results are bit-identical for a given seed and thread count).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON training report here.")
def train_mbllen_video_command(data, out, iterations, crop, frames, batch_size, lr, eval_every, eval_clips, seed,
                               threads, report):
    """MBLLEN video variant (3D convolutions) on synthetic dark clips: structure + region losses."""
    from vidlight.train.mbllen_video import MBLLENVideoTrainConfig, train_mbllen_video

    cfg = MBLLENVideoTrainConfig(str(data), str(out), iterations=iterations, crop=crop, frames=frames,
                                 batch_size=batch_size, lr=lr, eval_every=eval_every, eval_clips=eval_clips,
                                 seed=seed, threads=threads, report=str(report) if report else None)
    result = train_mbllen_video(cfg, log=click.echo)
    click.echo(f"best held-out PSNR {result['best']['psnr']:.3f} dB at iteration {result['best']['iteration']}; wrote {out}")


@train.command("sci")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with low/ (training images) and high/ (used only for held-out checkpoint selection).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Weights file to write.")
@click.option("--iterations", type=click.IntRange(min=1), default=20000, show_default=True)
@click.option("--crop", type=click.IntRange(min=16), default=128, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch threads (results are bit-identical for a given seed and thread count).")
def train_sci_command(data, out, iterations, crop, batch_size, lr, eval_every, seed, threads):
    """Zero-reference SCI training (fidelity + smoothness losses, self-calibrated stages)."""
    from vidlight.train.sci import SCITrainConfig, train_sci

    cfg = SCITrainConfig(str(data), str(out), iterations=iterations, crop=crop, batch_size=batch_size, lr=lr,
                         eval_every=eval_every, seed=seed, threads=threads)
    report = train_sci(cfg, log=click.echo)
    click.echo(f"best held-out PSNR {report['best']['psnr']:.3f} dB at iteration {report['best']['iteration']}; wrote {out}")


@main.command("eval")
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("outputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-l", "--label", "labels", multiple=True, metavar="NAME",
              help="Name of a video in the table and plot, once per video: INPUT first, then each OUTPUT. "
                   "[default: file names]")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a PNG line chart of every video's per-frame mean luma here.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Measure at most this many frames.")
@click.option("--no-warp", is_flag=True, help="Skip the warping error (its optical flow is the slow part).")
@click.option("--downscale", type=click.IntRange(min=1),
              help="Measure the warping error at 1/N of the frame size. [default: the smallest N that gives "
                   "at most 540 lines]")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def eval_command(input, outputs, labels, plot, max_frames, no_warp, downscale, no_progress):
    """Flicker of the dark video INPUT and of enhanced versions OUTPUT... of it.

    Prints per video: frames, mean luma (BT.601, 0-255), flicker index (mean |change of mean
    luma| between frames / mean luma) and warping error (Lai et al. 2018, with the optical
    flow of INPUT).
    """
    from vidlight.evaluate import check_plot_path, evaluate_videos, format_table, plot_luma

    if plot is not None:
        check_plot_path(plot)
    results = evaluate_videos(input, outputs, labels=labels or None, max_frames=max_frames, warping=not no_warp,
                              downscale=downscale, progress=not no_progress)
    click.echo(format_table(results))
    if plot is not None:
        plot_luma({r.label: r.lumas for r in results}, plot)
        click.echo(f"wrote {plot}")


@main.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", type=click.Choice(list_models()), default="sci", show_default=True)
@click.option("-w", "--weights", help="Catalogue name or checkpoint path. [default: the model's]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--height", type=click.IntRange(min=16), help="Scale the clip to this many lines first. [default: its own size]")
@click.option("--frames", "max_frames", type=click.IntRange(min=1), default=180, show_default=True, help="Use at most this many frames.")
@click.option("-b", "--batch-size", type=click.IntRange(min=1))
@click.option("--fp16/--fp32", default=None)
@click.option("--codec", default="libx264", show_default=True)
@click.option("--crf", type=click.IntRange(0, 63), default=18, show_default=True)
@click.option("--preset", default="veryfast", show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True,
              help="Interleaved rounds; each figure is the median.")
@click.option("--smooth/--no-smooth", default=True, show_default=True, help="As for process.")
@click.option("--strength", default="auto", show_default=True, metavar="auto|0..1", help="As for process.")
def bench(video, model, weights, device, height, max_frames, batch_size, fp16, codec, crf, preset, repeat, smooth,
          strength):
    """Measure fps of the I/O floor, a naive loop, vidlight as process runs it and the model alone, in one run."""
    from vidlight.bench import run_bench

    run_bench(video, model_name=model, weights=weights, device=device, height=height, max_frames=max_frames,
              batch_size=batch_size, fp16=fp16, codec=codec, crf=crf, preset=preset, repeat=repeat,
              smooth=smooth, strength=_parse_strength(strength), log=click.echo)


@main.command("bench-models")
@click.option("-m", "--model", "names", multiple=True, type=click.Choice(list_models()),
              help="Model to time (repeatable). [default: all]")
@click.option("--size", default="600x400", show_default=True, metavar="WxH", help="Frame size.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=2, show_default=True,
              help="Timed runs per model after one warm-up; the median is printed.")
def bench_models(names, size, device, repeat):
    """Params and milliseconds per frame of each model (and fp16 vs fp32 on CUDA)."""
    from vidlight.bench import model_figures

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH, e.g. 600x400, got {size!r}", param_hint="--size") from None
    model_figures(list(names) or list_models(), height=height, width=width, device=device, repeat=repeat,
                  log=click.echo)


if __name__ == "__main__":
    main()
