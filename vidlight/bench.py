"""Throughput figures measured in one run, on one clip, with one encoder setting.

* I/O floor: vidlight's pipeline with the model replaced by nothing (decode -> RGB -> encode).
* naive loop: the loop a user would write with PyAV: decode a frame (PyAV's default
  threading) into ``rgb24`` with ``to_ndarray``, the same model under ``torch.inference_mode()``
  in fp32, ``VideoFrame.from_ndarray`` and encode; one frame at a time, no batching.
* the same naive loop reading and writing through vidlight's own reader and writer (frame
  threading, planar colour conversions), so that vidlight's I/O code is on both sides.
* vidlight: :func:`vidlight.enhance_video` end to end, exactly as ``vidlight process`` runs
  it with the same flags (by default: smoothing on, ``--strength auto``).
* model alone: the enhancement stage on frames already in memory (uint8 in, the stage's own
  output), and the bare ``model(x)`` call on a float batch, in the precision ``process`` uses.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import torch
from av.video.stream import VideoStream

from vidlight.io.files import FileSink, FileSource, Frame, encoder_options, pixel_format
from vidlight.models import load_model
from vidlight.pipeline import runner
from vidlight.pipeline.enhancer import (
    FrameEnhancer,
    load_engine_model,
    prepare_engine,
    resolve_device,
    single_threaded_ops,
)
from vidlight.pipeline.stages import StageTime, measuring
from vidlight.settings import Settings

FLOOR, OURS = "I/O floor (decode+encode)", "vidlight end to end"
NAIVE, NAIVE_IO = "naive per-frame loop", "naive loop on vidlight's I/O"
ALONE, FORWARD = "model alone (uint8 frames in/out)", "model forward (float batch)"


@dataclass
class Figure:
    name: str
    frames: int
    seconds: float
    cpu_seconds: float = 0.0
    stages: list[StageTime] | None = None  # vidlight end to end: where the time went

    @property
    def fps(self) -> float:
        return self.frames / self.seconds


def machine_summary(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), PyAV {av.__version__}"
    if device.type == "cuda":
        text += f", GPU {torch.cuda.get_device_name(device)}"
    return text


def make_clip(source: Path, dest: Path, height: int | None, max_frames: int | None) -> Path:
    """``source``'s first ``max_frames`` frames as a near-lossless H.264 clip, scaled to ``height``
    lines (keeping aspect; None: its own size)."""
    src = FileSource(source)
    if height is None:
        width, height = src.info.width // 2 * 2, src.info.height // 2 * 2
    else:
        width = round(src.info.width * height / src.info.height / 2) * 2
    out = av.open(str(dest), "w")
    stream = out.add_stream("libx264", rate=src.info.average_rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = stream.codec_context.time_base = src.info.time_base
    stream.codec_context.colorspace, stream.codec_context.color_range = 1, 1
    stream.options = {"crf": "10", "preset": "veryfast"}
    n = 0
    for packet in src.container.demux(src.stream):
        for frame in packet.decode():
            scaled = frame.reformat(
                width=width,
                height=height,
                format="yuv420p",
                src_colorspace=src.info.matrix,
                dst_colorspace=1,
                interpolation="AREA",
            )
            scaled.pts = frame.pts
            out.mux(stream.encode(scaled))
            n += 1
            if max_frames and n >= max_frames:
                break
        if max_frames and n >= max_frames:
            break
    out.mux(stream.encode(None))
    out.close()
    src.close()
    return dest


class _NoModel:
    """Stands in for the enhancer to measure the pipeline's I/O alone."""

    workers = 0

    def __call__(self, frames, seconds=None, **options):
        return frames

    def reset(self) -> None:
        pass


def _timed_run(
    clip: Path, out: Path, enhancer, batch_size: int, codec: str, crf: int | None, preset: str | None
) -> Figure:
    source = FileSource(clip)
    sink = FileSink(out, source.info, codec=codec, crf=crf, preset=preset)
    start, cpu = time.perf_counter(), time.process_time()
    stats = runner._run(source, sink, enhancer, batch_size, progress=False)
    return Figure("", stats.frames, time.perf_counter() - start, time.process_time() - cpu)


def _to_batch(rgb, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float() / 255.0


def _to_rgb(y: torch.Tensor):
    return (y.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()


@torch.inference_mode()
def _naive(
    clip: Path,
    out: Path,
    model: torch.nn.Module,
    device: torch.device,
    codec: str,
    crf: int | None,
    preset: str | None,
    *,
    our_io: bool = False,
) -> Figure:
    """The loop as a user writes it with PyAV alone: its default decoder threading, its own
    colour conversions, the encoder's settings and nothing else. ``our_io``: the same loop,
    reading and writing through vidlight's FileSource and FileSink instead."""
    n = 0
    if our_io:
        source = FileSource(clip)
        sink = FileSink(out, source.info, codec=codec, crf=crf, preset=preset)
        start, cpu = time.perf_counter(), time.process_time()
        for item in source:
            if isinstance(item, Frame):
                sink.write(_to_rgb(model(_to_batch(item.rgb, device))), item.pts)
                n += 1
        sink.close()
        source.close()
        return Figure("", n, time.perf_counter() - start, time.process_time() - cpu)
    with av.open(str(clip)) as reader, av.open(str(out), "w") as writer:
        video = reader.streams.video[0]
        stream = cast(VideoStream, writer.add_stream(codec, rate=video.average_rate))
        formats = [f.name for f in (stream.codec_context.codec.video_formats or [])]
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, pixel_format(formats, 8)
        stream.time_base = stream.codec_context.time_base = video.time_base or Fraction(1, 90000)
        stream.options = dict[str, object](encoder_options(codec, crf, preset))
        start, cpu = time.perf_counter(), time.process_time()  # as for the others: files open
        for frame in reader.decode(video):
            y = _to_rgb(model(_to_batch(frame.to_ndarray(format="rgb24"), device)))
            result = av.VideoFrame.from_ndarray(y, format="rgb24")
            result.pts, result.time_base = frame.pts, frame.time_base
            writer.mux(stream.encode(result))
            n += 1
        writer.mux(stream.encode(None))
    return Figure("", n, time.perf_counter() - start, time.process_time() - cpu)


def run_bench(
    video: Path,
    settings: Settings | None = None,
    *,
    height: int | None = None,
    max_frames: int | None = 180,
    repeat: int = 3,
    log=print,
    **options,
) -> dict[str, Figure]:
    """The figures of the module docstring for ``video``'s first ``max_frames`` frames.

    Args:
        settings, options: the run's settings, as ``vidlight process`` takes them (the engine,
            temporal and encoder groups are used).
        height: scale the clip to this many lines first (None: its own size).
        repeat: interleaved rounds; each figure is the median of its rounds.
    """
    settings = (settings or Settings()).replace(progress=False, overwrite=True, **options)
    engine, temporal, encoder = settings.engine, settings.temporal, settings.encoder
    codec, crf, preset = encoder.codec, encoder.crf, encoder.preset
    smooth, strength = temporal.smooth, temporal.strength
    model_name = engine.model if isinstance(engine.model, str) else type(engine.model).__name__
    dev, batch_size = prepare_engine(engine)
    # Three copies of the weights: the pipeline's and the stage's (moved to fp16 where process
    # runs fp16) and the naive loop's (fp32, as a user's loop would load it).
    pipeline_model, fp16 = load_engine_model(engine, dev)
    model, _ = load_engine_model(engine, dev)
    enhancer = FrameEnhancer(
        model,
        device=dev,
        fp16=fp16,
        tile=engine.tile,
        tile_overlap=engine.tile_overlap,
        keep_precision=smooth,
        statistics_time=temporal.smooth_time if smooth else None,
        strength=strength,
    )
    pipeline_settings = settings.replace(model=pipeline_model, fp16=fp16, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="vidlight-bench-") as folder:
        tmp = Path(folder)
        clip = make_clip(video, tmp / "clip.mp4", height, max_frames)
        info = FileSource(clip).info
        log(
            f"clip: {video.name}{' scaled' if height else ''} at {info.width}x{info.height}, {info.frames} frames; "
            f"encoder {codec} preset {preset} crf {crf}; model {model_name} on {dev} "
            f"(batch {batch_size}{', fp16' if enhancer.fp16 else ''}, strength {strength}, "
            f"smoothing {'on' if smooth else 'off'})"
        )
        log(f"machine: {machine_summary(dev)}")
        frames = [f.rgb for f in FileSource(clip) if isinstance(f, Frame)]

        runs: dict[str, list[Figure]] = {}

        def measure_model_alone() -> Figure:
            with single_threaded_ops() if enhancer.workers > 1 else contextlib.nullcontext():
                enhancer(frames[:batch_size])  # warm-up
                start, cpu = time.perf_counter(), time.process_time()
                for i in range(0, len(frames), batch_size):
                    enhancer(frames[i : i + batch_size])
                return Figure("", len(frames), time.perf_counter() - start, time.process_time() - cpu)

        naive_model = load_engine_model(engine, dev)[0].float()
        # Kernels compiled on first use (SCI's on a CPU, a few seconds when their disk cache is
        # cold) are compiled here, before any clock runs.
        with single_threaded_ops() if enhancer.workers > 1 else contextlib.nullcontext():
            enhancer(frames[:batch_size])
        # Interleaved rounds: a slow spell of a shared machine hits every figure alike,
        # and each figure is reported as the median of its rounds. The naive loop too: a model
        # on torch's OpenMP threads contends with x264's, and one round of it can be twice another.
        for _ in range(repeat):
            runs.setdefault(FLOOR, []).append(
                _timed_run(clip, tmp / "io.mp4", _NoModel(), batch_size, codec, crf, preset)
            )
            with measuring() as clock:
                start, cpu = time.perf_counter(), time.process_time()
                stats = runner.enhance_video(clip, tmp / "vl.mp4", pipeline_settings)
                runs.setdefault(OURS, []).append(
                    Figure("", stats.frames, time.perf_counter() - start, time.process_time() - cpu, clock.breakdown())
                )
            runs.setdefault(ALONE, []).append(measure_model_alone())
            runs.setdefault(NAIVE, []).append(_naive(clip, tmp / "naive.mp4", naive_model, dev, codec, crf, preset))
            runs.setdefault(NAIVE_IO, []).append(
                _naive(clip, tmp / "naive-io.mp4", naive_model, dev, codec, crf, preset, our_io=True)
            )

        x = torch.rand(batch_size, 3, info.height, info.width, device=dev, dtype=enhancer.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            enhancer.model(x)
            reps = max(1, len(frames) // batch_size)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(reps):
                enhancer.model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        runs[FORWARD] = [Figure("", reps * batch_size, time.perf_counter() - start, time.process_time() - cpu)]

    figures = {}
    for name in (FLOOR, NAIVE, NAIVE_IO, OURS, ALONE, FORWARD):
        ordered = sorted(runs[name], key=lambda f: f.fps)
        figures[name] = ordered[len(ordered) // 2]
        figures[name].name = name
        spread = f", range {ordered[0].fps:.1f}-{ordered[-1].fps:.1f}" if len(ordered) > 1 else ""
        fig = figures[name]
        log(
            f"  {name:<36} {fig.fps:8.1f} fps  ({fig.frames} frames, {1000 * fig.cpu_seconds / fig.frames:.0f} "
            f"CPU-ms/frame{spread})"
        )
    ours_figure = figures[OURS]
    log(f"  where {OURS}'s time goes (its median round; CPU-ms per frame, busy share of wall time):")
    for stage in ours_figure.stages or []:
        log(
            f"    {stage.name:<20} {1000 * stage.cpu_seconds / ours_figure.frames:6.1f} CPU-ms/frame  "
            f"{100 * stage.busy_seconds / ours_figure.seconds:5.1f} % of wall"
        )
    if ours_figure.stages:
        # FFmpeg decodes and encodes on threads of its own, whose CPU time no stage's thread sees.
        rest = ours_figure.cpu_seconds - sum(stage.cpu_seconds for stage in ours_figure.stages)
        log(f"    {'FFmpeg codec threads and the rest':<20} {1000 * rest / ours_figure.frames:6.1f} CPU-ms/frame")
    floor, naive, naive_io, ours = (figures[k].fps for k in (FLOOR, NAIVE, NAIVE_IO, OURS))
    log(
        f"  vidlight / naive loop = {ours / naive:.2f}x;  vidlight / naive loop on vidlight's I/O = "
        f"{ours / naive_io:.2f}x;  vidlight / I/O floor = {ours / floor:.2f}x  (medians of {repeat} interleaved rounds)"
    )
    return figures


@dataclass
class ModelFigure:
    name: str
    params: int
    weights: str  # what the timing ran with
    ms_per_frame: float
    fp16_max_levels: float | None = None  # 8-bit levels between fp16 and fp32 output


def model_figures(
    names: list[str],
    *,
    height: int = 400,
    width: int = 600,
    device: str = "auto",
    repeat: int = 2,
    log=print,
) -> list[ModelFigure]:
    """Milliseconds per ``height`` x ``width`` frame of each model's forward (median of
    ``repeat`` runs after a warm-up), and on CUDA the fp16-vs-fp32 difference in 8-bit levels.

    Models whose weights are not here (the Google-Drive-only checkpoints) are timed with
    random weights: the time does not depend on the values.
    """
    from vidlight.errors import WeightsError
    from vidlight.models import get_model_spec

    dev = resolve_device(device)
    log(f"machine: {machine_summary(dev)}; frame {width}x{height}")
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(dev)
    out = []
    for name in names:
        try:
            model, weights = load_model(name, device=dev), "default"
        except WeightsError:
            torch.manual_seed(0)
            model, weights = get_model_spec(name).builder().eval().requires_grad_(False).to(dev), "random"
        times = []
        with torch.inference_mode():
            for i in range(repeat + 1):
                start = time.perf_counter()
                y = model(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i:  # the first run warms up
                    times.append(time.perf_counter() - start)
            levels = None
            if dev.type == "cuda":
                half = model.half()(x.half()).float()
                levels = float(((half.clamp(0, 1) - y.clamp(0, 1)).abs() * 255).max())
                model.float()
        figure = ModelFigure(
            name, sum(p.numel() for p in model.parameters()), weights, 1000 * sorted(times)[len(times) // 2], levels
        )
        fp16 = "" if levels is None else f", fp16 vs fp32 max {levels:.1f} levels"
        log(f"{name}: {figure.params:,} params, {figure.ms_per_frame:.0f} ms/frame ({weights} weights){fp16}")
        out.append(figure)
    return out
