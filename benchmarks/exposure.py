"""The right picture at every exposure: the exposure ladder, LOL eval15 and the real night clip.

* **Ladder.** The 15 normal-light images of LOL eval15 (``high/``; never inputs elsewhere) are
  darkened in linear light by each factor ``k`` (``--levels``), with a camera's noise: shot noise
  (Poisson, :data:`FULL_WELL` electrons at full scale) and read noise (Gaussian,
  :data:`READ_NOISE` electrons), then encoded back to 8-bit sRGB; seeded, so every run sees
  the same pictures. Each darkened image goes through ``vidlight.enhance_video`` as a one-image
  folder (what ``vidlight process dark/ out/`` runs, every image its own scene), at strength 1
  and at the default ``auto``, and is scored (PSNR, SSIM) against its original. Beside them:
  the darkened input itself and a per-image gamma to mean luma 0.45 (``x ** (log 0.45 / log
  mean)``, one line of numpy). Beside PSNR and SSIM, the colour cast (the chroma distance of
  the mean colour from the original's, :func:`colour_cast`) and, for the first model at
  ``auto``, its output after a 3 x 3 Gaussian blur (what spatial denoising would be worth).
* **LOL eval15.** The 15 low images as one folder through the defaults, against strength 1:
  very dark frames keep the full enhancement.
* **City clip.** ``guoqi_dark_city_night.mp4`` with the defaults: the output's mean luma and its
  share of clipped pixels (a channel at 250 or more) against the input's.

Checks printed at the end (the default model, SCI, at ``auto``): k = 1 keeps >= 30 dB; every
darker level beats the input and the gamma (and by how much: the moonshot is gamma + 2 dB);
the darkest level gains >= 8 dB over its input; LOL within 0.3 dB of strength 1; the city
clip's mean luma in 70..150 with at most 2 points more clipped pixels than its input.

    python benchmarks/exposure.py                       # sci, the default
    python benchmarks/exposure.py -m sci -m zero-dce++ -m mbllen --json exposure.json
    VIDLIGHT_WEIGHTS_DIR=../shared/weights python benchmarks/exposure.py -m zero-dce -m mbllen

Models whose official weights are not in a public repository (KinD, KinD++, EnlightenGAN,
LLFlow) cannot be measured for quality here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from vidlight import enhance_video
from vidlight.metrics import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared"
LOL = SHARED / "data" / "lol_eval15"
CITY = SHARED / "data" / "videos" / "guoqi_dark_city_night.mp4"
LEVELS = (1.0, 0.5, 0.25, 0.1, 0.04)
FULL_WELL = 2000.0  # electrons at full scale (linear 1.0)
READ_NOISE = 2.0  # electrons, Gaussian
GAMMA_TARGET = 0.45
LUMA = np.array([0.299, 0.587, 0.114])
CLIPPED = 250  # a pixel with a channel at or above this is clipped


def srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * v ** (1 / 2.4) - 0.055)


def darken(image: np.ndarray, k: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (8-bit sRGB) with ``k`` times the light, through a camera's shot and read noise."""
    electrons = srgb_to_linear(image / 255.0) * k * FULL_WELL
    measured = rng.poisson(electrons) + rng.normal(0.0, READ_NOISE, electrons.shape)
    return np.round(linear_to_srgb(measured / FULL_WELL) * 255).astype(np.uint8)


def gamma_baseline(image: np.ndarray) -> np.ndarray:
    x = image / 255.0
    mean = max(float((x @ LUMA).mean()), 1e-3)
    return np.round(np.clip(x ** (np.log(GAMMA_TARGET) / np.log(mean)), 0, 1) * 255).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].copy()


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def natural(path: Path) -> list:
    """``path``'s name as text and numbers (``2.png`` before ``10.png``), as folders are read."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def enhance_images(folder: Path, out: Path, **options) -> list[np.ndarray]:
    """Every image of ``folder`` through enhance_video as a folder; the outputs in the folder's
    order (each keeps its input's name)."""
    out.mkdir(parents=True, exist_ok=True)
    enhance_video(folder, str(out) + "/", progress=False, overwrite=True, **options)
    return [read_rgb(p) for p in sorted(out.glob("*.png"), key=natural)]


def enhance_each(images: list[np.ndarray], work: Path, **options) -> list[np.ndarray]:
    """Each image through enhance_video on its own (a one-image folder: its own scene)."""
    outs = []
    for n, image in enumerate(images):
        src, dst = work / f"in{n}", work / f"out{n}"
        src.mkdir(parents=True, exist_ok=True)
        write_rgb(src / "frame.png", image)
        outs += enhance_images(src, dst, **options)
    return outs


def colour_cast(image: np.ndarray, original: np.ndarray) -> float:
    """How far ``image``'s mean colour is from ``original``'s in chroma: the distance of their
    CIELAB a*, b* (brightness left out; about 2 is a just-visible cast)."""
    means = np.stack([image.reshape(-1, 3).mean(0), original.reshape(-1, 3).mean(0)]) / 255.0
    lab = cv2.cvtColor(means.astype(np.float32)[None], cv2.COLOR_RGB2LAB)[0]
    return float(np.hypot(*(lab[0, 1:] - lab[1, 1:])))


def scores(outputs: list[np.ndarray], originals: list[np.ndarray]) -> tuple[float, float, float]:
    """Mean PSNR, SSIM and colour cast of ``outputs`` against ``originals``."""
    return (
        float(np.mean([psnr(o, h) for o, h in zip(outputs, originals)])),
        float(np.mean([ssim(o, h) for o, h in zip(outputs, originals)])),
        float(np.mean([colour_cast(o, h) for o, h in zip(outputs, originals)])),
    )


def blurred(images: list[np.ndarray]) -> list[np.ndarray]:
    """A 3 x 3 Gaussian blur: what plain spatial denoising of the output would be worth."""
    return [cv2.GaussianBlur(i, (3, 3), 0) for i in images]


def ladder(models: list[str], levels: list[float], work: Path, weights: dict[str, str | None]) -> dict:
    highs = [read_rgb(p) for p in sorted((LOL / "high").glob("*.png"))]
    rng = np.random.default_rng(2026)
    table: dict = {}
    for k in levels:
        dark = [darken(h, k, rng) for h in highs]
        row = {"input": scores(dark, highs), "gamma": scores([gamma_baseline(d) for d in dark], highs)}
        for model in models:
            for strength in (1.0, "auto"):
                start = time.perf_counter()
                outs = enhance_each(
                    dark, work / f"{model}-{k}-{strength}", model=model, weights=weights.get(model), strength=strength
                )
                row[f"{model}@{strength}"] = scores(outs, highs)
                if model == models[0] and strength == "auto":
                    row["blurred"] = scores(blurred(outs), highs)
                print(
                    f"  k={k} {model} strength {strength}: {row[f'{model}@{strength}'][0]:.2f} dB "
                    f"({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        table[k] = row
    return table


def print_ladder(table: dict, models: list[str]) -> None:
    columns = ["input", "gamma"] + [f"{m}@{s}" for m in models for s in (1.0, "auto")]
    names = {"input": "input", "gamma": "gamma 0.45"} | {
        f"{m}@{s}": f"{m} {'1' if s == 1.0 else 'auto'}" for m in models for s in (1.0, "auto")
    }
    names["blurred"] = f"{models[0]} auto + 3x3 blur"
    columns.append("blurred")
    print("\nPSNR dB / SSIM against the well-lit original, mean of 15 images\n")
    print("| k | " + " | ".join(names[c] for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for k, row in table.items():
        print(f"| {k:g} | " + " | ".join(f"{row[c][0]:.2f} / {row[c][1]:.3f}" for c in columns) + " |")
    print("\nColour cast (CIELAB a*b* distance of the mean colour from the original's), mean of 15 images\n")
    print("| k | " + " | ".join(names[c] for c in columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for k, row in table.items():
        print(f"| {k:g} | " + " | ".join(f"{row[c][2]:.2f}" for c in columns) + " |")


def lol_check(model: str, work: Path, weights: str | None) -> dict:
    # The folder is read in natural order (2.png before 10.png): the originals in the same order.
    highs = [read_rgb(p) for p in sorted((LOL / "high").glob("*.png"), key=lambda p: int(p.stem))]
    result = {}
    for strength in ("auto", 1.0):
        outs = enhance_images(LOL / "low", work / f"lol-{strength}", model=model, weights=weights, strength=strength)
        result[str(strength)] = scores(outs, highs)
    return result


def frame_figures(path: Path, frames: int) -> list[tuple[float, float]]:
    """(mean luma, % clipped pixels) of the first ``frames`` frames."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            out.append((float((rgb @ LUMA).mean()), 100.0 * float((rgb.max(axis=2) >= CLIPPED).mean())))
            if len(out) == frames:
                break
    return out


def city_check(model: str, work: Path, frames: int, weights: str | None) -> dict:
    out = work / "city.mp4"
    enhance_video(
        CITY, out, model=model, weights=weights, max_frames=frames, progress=False, overwrite=True, preset="veryfast"
    )
    src, dst = np.array(frame_figures(CITY, frames)), np.array(frame_figures(out, frames))
    return {
        "input_luma": float(src[:, 0].mean()),
        "output_luma": float(dst[:, 0].mean()),
        "input_clipped": float(src[:, 1].mean()),
        "output_clipped": float(dst[:, 1].mean()),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-m", "--model", action="append", help="model (repeatable; default sci)")
    p.add_argument(
        "-w", "--weights", action="append", default=[], metavar="MODEL=WEIGHTS", help="weights for a model (repeatable)"
    )
    p.add_argument("--levels", default=",".join(f"{k:g}" for k in LEVELS), help="exposure factors, comma-separated")
    p.add_argument("--city-frames", type=int, default=60)
    p.add_argument("--no-lol", action="store_true")
    p.add_argument("--no-city", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    models = args.model or ["sci"]
    weights = dict(item.split("=", 1) for item in args.weights)
    levels = [float(v) for v in args.levels.split(",")]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table = ladder(models, levels, work, weights)
        figures["ladder"] = {str(k): v for k, v in table.items()}
        print_ladder(table, models)
        default = models[0]
        if not args.no_lol:
            figures["lol"] = lol_check(default, work, weights.get(default))
        if not args.no_city:
            figures["city"] = city_check(default, work, args.city_frames, weights.get(default))
    failures = 0

    def check(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok ' if ok else 'NO '} {text}")

    print(f"\nChecks ({default} at auto, the default):")
    auto = f"{default}@auto"
    for k, row in table.items():
        got, inp, gam = row[auto][0], row["input"][0], row["gamma"][0]
        if k == 1.0:
            check(got >= 30.0, f"k=1: {got:.2f} dB >= 30 (input {inp:.2f})")
        else:
            check(
                got > inp and got > gam,
                f"k={k:g}: {got:.2f} dB beats input {inp:.2f} and gamma {gam:.2f} "
                f"(gamma {got - gam:+.2f} dB; moonshot +2)",
            )
    darkest = min(table)
    gain = table[darkest][auto][0] - table[darkest]["input"][0]
    check(gain >= 8.0, f"k={darkest:g}: gains {gain:.2f} dB over the input (>= 8)")
    if "lol" in figures:
        a, one = figures["lol"]["auto"][0], figures["lol"]["1.0"][0]
        check(one - a <= 0.3, f"LOL eval15 as a folder: auto {a:.2f} dB, strength 1 {one:.2f} dB (within 0.3)")
    if "city" in figures:
        c = figures["city"]
        check(
            70 <= c["output_luma"] <= 150 and c["output_clipped"] - c["input_clipped"] <= 2.0,
            f"city clip: mean luma {c['input_luma']:.1f} -> {c['output_luma']:.1f} (70..150), clipped "
            f"{c['input_clipped']:.2f} % -> {c['output_clipped']:.2f} % (at most +2 points)",
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
