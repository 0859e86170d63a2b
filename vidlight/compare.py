"""``vidlight compare``: one self-contained HTML page to pick a model by looking.

Every model (at every strength asked for) enhances the same first frames of a video. The page
shows, for a few frames sampled across them, a before/after slider per model; the mean luma of
every frame over time and its frame-to-frame change (the flicker) for the input and each
model; and the time each model took. Pictures are embedded as JPEG data, the plots as SVG,
the slider is a few lines of script: the file opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidlight.errors import VidlightError, WeightsError
from vidlight.io.files import FileSource, Frame, hidden_path
from vidlight.settings import Settings
from vidlight.video_metrics import flicker_index, mean_luma

COLOURS = ("#222222", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
PICTURE_WIDTH = 640  # pixels: the embedded pictures are scaled down to at most this width


@dataclass
class Variant:
    """The input, or one model at one strength, on the compared frames."""

    label: str
    lumas: list[float] = field(default_factory=list)
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> RGB
    seconds: float | None = None  # enhancement time (None for the input)

    @property
    def fps(self) -> float | None:
        return len(self.lumas) / self.seconds if self.seconds else None


def sample_indices(frames: int, samples: int) -> list[int]:
    """``samples`` frame indices spread evenly over ``frames`` (the middle of each share)."""
    count = max(1, min(samples, frames))
    return sorted({int((i + 0.5) * frames / count) for i in range(count)})


def compare(
    input: str | os.PathLike,
    output: str | os.PathLike,
    models: Sequence[str],
    *,
    strengths: Sequence[float | str] = ("auto",),
    frames: int = 150,
    samples: int = 4,
    settings: Settings | None = None,
    log: Callable[[str], None] = print,
) -> list[Variant]:
    """Write the comparison page of ``models`` x ``strengths`` on ``input``'s first ``frames``
    frames to ``output``; returns what it measured (the input first).

    ``settings`` are the rest of the run's settings (device, batch size, smoothing, ...).
    """
    from vidlight.pipeline.enhancer import load_engine_model, prepare_engine
    from vidlight.pipeline.iterate import enhanced_frames

    settings = settings or Settings()
    if not models:
        raise VidlightError("name at least one model to compare, e.g. --models sci,zero-dce++")
    variants_wanted = [
        (settings.replace(model=m, strength=s).engine.model, settings.replace(strength=s).temporal.strength)
        for m in models
        for s in strengths
    ]
    output = Path(output)
    if not output.parent.is_dir():
        raise VidlightError(f"cannot write {output}: folder {output.parent} does not exist")
    original = Variant("input")
    # Two passes over the input, so that only the sampled pictures are kept: their luma,
    # which tells how many frames there are, then the pictures at the sampled frames.
    for _, rgb in _input_frames(input, frames):
        original.lumas.append(mean_luma(rgb))
    if not original.lumas:
        raise VidlightError(f"no frame of {input} could be decoded")
    wanted = set(sample_indices(len(original.lumas), samples))
    original.samples = {index: rgb for index, rgb in _input_frames(input, frames) if index in wanted}
    variants = [original]
    unavailable: dict[str, WeightsError] = {}
    loaded: dict[str, tuple] = {}  # model name -> (module, fp16), loaded once for all its strengths
    for model, strength in variants_wanted:
        if model in unavailable:
            continue
        label = model if len(strengths) == 1 else f"{model}, strength {strength}"
        variant = Variant(label)
        log(f"{label}: enhancing {len(original.lumas)} frames")
        run = settings.replace(model=model, strength=strength, max_frames=len(original.lumas), progress=False)
        try:
            if model not in loaded:
                loaded[model] = load_engine_model(run.engine, prepare_engine(run.engine)[0])
            module, fp16 = loaded[model]
            run = run.replace(model=module, fp16=fp16)
            # A first frame untimed: loading, compiling and first-call costs are not the
            # model's speed, and would fall on whichever variant came first.
            with enhanced_frames(str(input), settings=run.replace(max_frames=1)) as warm_up:
                for _ in warm_up:
                    pass
            start = time.perf_counter()
            for index, frame in enumerate(enhanced_frames(str(input), settings=run)):
                image = np.asarray(frame.image)  # numpy frames (the iterator's default format)
                variant.lumas.append(mean_luma(image))
                if index in original.samples:
                    variant.samples[index] = image
        except WeightsError as exc:
            if settings.engine.weights is not None:
                raise  # the user's own checkpoint: theirs to fix, not to leave out
            # A model whose weights are not here (offline, say) is left out; the others are
            # still compared.
            unavailable[model] = exc
            log(f"{model}: left out: {exc}")
            continue
        variant.seconds = time.perf_counter() - start
        log(f"{label}: {variant.fps:.1f} fps, flicker index {flicker_index(variant.lumas):.5f}")
        variants.append(variant)
    if len(variants) == 1:  # no model could run
        raise next(iter(unavailable.values()))
    tmp = hidden_path(output, "partial", keep_suffix=False)
    tmp.write_text(render_page(Path(input).name, variants, unavailable))
    os.replace(tmp, output)
    log(f"wrote {output}")
    return variants


def _input_frames(input: str | os.PathLike, frames: int) -> Iterator[tuple[int, np.ndarray]]:
    """The first ``frames`` pictures of ``input`` with their index."""
    source = FileSource(input)
    try:
        index = 0
        for item in source:
            if isinstance(item, Frame):
                yield index, item.rgb
                index += 1
                if index >= frames:
                    return
    finally:
        source.close()


def _jpeg(rgb: np.ndarray) -> str:
    if rgb.dtype != np.uint8:
        rgb = (rgb.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    h, w = rgb.shape[:2]
    if w > PICTURE_WIDTH:
        rgb = cv2.resize(rgb, (PICTURE_WIDTH, round(h * PICTURE_WIDTH / w)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise VidlightError("could not encode a picture for the page")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def line_plot(series: Sequence[tuple[str, str, Sequence[float]]], title: str, y_label: str) -> str:
    """An SVG line chart of ``(label, colour, values)`` series over the frame index."""
    from vidlight.evaluate import nice_ticks

    width, height, left, right, top, bottom = 760, 260, 56, 150, 28, 36
    values = [v for _, _, ys in series for v in ys]
    longest = max(len(ys) for _, _, ys in series)
    ticks = nice_ticks(min(values), max(values)) if values else [0.0, 1.0]
    lo, hi = min(ticks[0], min(values, default=0.0)), max(ticks[-1], max(values, default=1.0))
    hi = hi if hi > lo else lo + 1

    def x(i: float) -> float:
        return left + (width - left - right) * (i / max(1, longest - 1))

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" class="title">{html.escape(title)}</text>',
    ]
    for tick in ticks:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">frame</text>')
    for n, (label, colour, ys) in enumerate(series):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ys))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
        ly = top + 16 * n + 6
        parts.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 28}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{width - right + 34}" y="{ly + 4}">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>vidlight compare: {name}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin: 12px 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.plot text {{ font-size: 11px; fill: #333; }} .plot .title {{ font-size: 13px; font-weight: 600; }}
.plot .grid {{ stroke: #e5e5e5; }}
.frames {{ display: flex; flex-wrap: wrap; gap: 16px; margin-bottom: 24px; }}
.slider {{ position: relative; display: inline-block; line-height: 0; }}
.slider img {{ display: block; max-width: {width}px; }}
.slider img.after {{ position: absolute; top: 0; left: 0; clip-path: inset(0 0 0 50%); }}
.slider input {{ position: absolute; left: 0; bottom: 6px; width: 100%; margin: 0; }}
.caption {{ line-height: 1.4; font-size: 12px; margin-top: 4px; }}
</style></head><body>
<h1>{name}: {count} model(s) compared</h1>
<p>{frames} frames. In each picture the input is on the left of the slider, the model's output on
the right: drag it. Flicker index: mean |change of mean luma| between frames / mean luma.</p>
<table><tr><th>video</th><th>seconds</th><th>fps</th><th>mean luma</th><th>flicker index</th></tr>
{rows}
</table>
{left_out}
{luma_plot}
{flicker_plot}
{sections}
<script>
for (const slider of document.querySelectorAll(".slider")) {{
  const after = slider.querySelector("img.after"), range = slider.querySelector("input");
  const show = () => {{ after.style.clipPath = "inset(0 0 0 " + range.value + "%)"; }};
  range.addEventListener("input", show);
  show();
}}
</script>
</body></html>
"""


def render_page(name: str, variants: list[Variant], left_out: Mapping[str, Exception] | None = None) -> str:
    """The page: the table, the plots and the sampled frames; ``left_out``: the models that could
    not run, and why."""
    original, models = variants[0], variants[1:]
    rows = []
    for v in variants:
        seconds = f"{v.seconds:.1f}" if v.seconds is not None else "–"
        fps = f"{v.fps:.1f}" if v.fps is not None else "–"
        rows.append(
            f"<tr><td>{html.escape(v.label)}</td><td>{seconds}</td><td>{fps}</td>"
            f"<td>{np.mean(v.lumas):.1f}</td><td>{flicker_index(v.lumas):.5f}</td></tr>"
        )
    series = [(v.label, COLOURS[n % len(COLOURS)], v.lumas) for n, v in enumerate(variants)]
    changes = [(label, colour, list(np.abs(np.diff(ys)))) for label, colour, ys in series]
    sections = []
    befores = {i: _jpeg(p) for i, p in original.samples.items()}
    for index in sorted(original.samples):
        sections.append(f'<h2>Frame {index}</h2><div class="frames">')
        for v in models:
            if index not in v.samples:
                continue
            sections.append(
                f'<figure><div class="slider" data-model="{html.escape(v.label)}" data-frame="{index}">'
                f'<img class="before" alt="input, frame {index}" src="{befores[index]}">'
                f'<img class="after" alt="{html.escape(v.label)}, frame {index}" src="{_jpeg(v.samples[index])}">'
                f'<input type="range" min="0" max="100" value="50" aria-label="before/after"></div>'
                f'<figcaption class="caption">left: input (luma {original.lumas[index]:.0f}); right: '
                f"{html.escape(v.label)} (luma {v.lumas[index]:.0f})</figcaption></figure>"
            )
        sections.append("</div>")
    return PAGE.format(
        name=html.escape(name),
        count=len(models),
        frames=len(original.lumas),
        rows="\n".join(rows),
        width=PICTURE_WIDTH,
        sections="\n".join(sections),
        luma_plot=line_plot(series, "Mean luma over time", "mean luma (0-255)"),
        flicker_plot=line_plot(changes, "Flicker: change of mean luma from the previous frame", "|change|"),
        left_out="".join(
            f'<p class="left-out">{html.escape(model)}: left out: {html.escape(str(exc))}</p>'
            for model, exc in (left_out or {}).items()
        ),
    )
