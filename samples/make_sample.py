#!/usr/bin/env python3
"""Synthesise a short, dark, noisy test clip (with an audio track) for vidlight.

The clip is a procedural "night street": a gradient sky with a few stars,
a row of buildings with lit windows, street lamps, a road with lane markings
and a few cars (with headlights and tail lights) crossing the frame, all seen
through a slow camera pan.  Everything is rendered with vectorised numpy and
is fully deterministic given ``--seed``.

Low-light synthesis
-------------------
Each rendered frame is first produced as a normally exposed ("clean") image
with values in [0, 1].  It is then darkened the way MBLLEN synthesises its
low-light training pairs (F. Lv, F. Lu, J. Wu, C. Lim, "MBLLEN: Low-light
Image/Video Enhancement Using CNNs", BMVC 2018): a gamma curve to lower the
exposure, followed by Poisson (shot) noise::

    dark  = scale * clean ** gamma              # gamma ~ 2-3.5, default 3.0
    noisy = Poisson(dark * peak) / peak         # peak = photon count, here 200
    out   = uint8(round(clip(noisy, 0, 1) * 255))

``gamma`` is a fixed per-clip value (``--gamma``, default 3.0); ``scale``
(``--scale``, default 1.0, i.e. off) is an optional extra exposure factor
(e.g. 0.5) for pushing a clip further into the dark.  With the defaults the
clip lands in the really-dark range (mean luma ~20 / 255).  ``peak`` (``--peak``,
default 200) sets the noise strength: fewer photons means more noise.  The
noise is drawn from a seeded generator, so the output is reproducible.

Encoding
--------
Video: H.264 (libx264), yuv420p, CRF 23, preset medium, tagged as BT.709
limited ("TV"/MPEG) range; the RGB->YUV conversion uses the same BT.709
matrix and limited range so the pixels match the tag.
Audio: AAC, 48 kHz stereo: a low mains-like hum, a short rising chirp at the
start of every second, and a soft engine rumble; same duration as the video.

Only numpy and PyAV (``av``) are needed::

    python samples/make_sample.py --out samples/dark_street.mp4 --seed 0
"""

from __future__ import annotations

import argparse
import os
import sys

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc

# BT.709 luma weights (applied to the gamma-encoded R'G'B' values).
LUMA_709 = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


# --------------------------------------------------------------------------
# Scene rendering (clean frames in [0, 1])
# --------------------------------------------------------------------------


def _soft_disc(img, cx, cy, radius, color, softness=1.0):
    """Alpha-blend an anti-aliased filled disc into ``img`` (H, W, 3) in place."""
    h, w, _ = img.shape
    r = radius + 2 * softness
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 2, w)
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 2, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    a = np.clip((radius - d) / softness + 0.5, 0.0, 1.0)[..., None]
    img[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - a) + np.asarray(color, np.float32) * a


def _glow(img, cx, cy, sigma, color, strength=1.0):
    """Add a Gaussian light glow (additive) centred at (cx, cy), in place."""
    h, w, _ = img.shape
    r = 3 * sigma
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, w)
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))[..., None]
    img[y0:y1, x0:x1] += strength * g * np.asarray(color, np.float32)


def _rect(img, x0, y0, x1, y1, color):
    """Fill an axis-aligned rectangle (clipped to the image), in place."""
    h, w, _ = img.shape
    x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    if x0 < x1 and y0 < y1:
        img[y0:y1, x0:x1] = color


def render_background(world_w, height, rng):
    """Static part of the scene, rendered once on a canvas wider than the frame."""
    h, w = height, world_w
    horizon = int(0.62 * h)
    img = np.zeros((h, w, 3), np.float32)

    # Sky: vertical gradient, deep blue at the top to a warm haze at the horizon.
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    top = np.array([0.10, 0.16, 0.38], np.float32)
    bottom = np.array([0.55, 0.45, 0.55], np.float32)
    img[:horizon] = (top * (1 - t) + bottom * t)[:, None, :]

    # Stars: a few single bright pixels in the upper sky.
    n_stars = w // 12
    sx = rng.integers(0, w, n_stars)
    sy = rng.integers(0, horizon // 2, n_stars)
    img[sy, sx] = rng.uniform(0.7, 1.0, (n_stars, 1)).astype(np.float32)

    # Moon.
    _soft_disc(img, 0.8 * w, 0.14 * h, 0.045 * h, (0.95, 0.93, 0.80), softness=1.2)
    _glow(img, 0.8 * w, 0.14 * h, 0.08 * h, (0.35, 0.33, 0.25), strength=0.6)

    # Ground: pavement strip, road, kerb.
    road_top = horizon + int(0.10 * h)
    img[horizon:road_top] = (0.42, 0.40, 0.38)  # pavement
    img[road_top:] = (0.26, 0.26, 0.29)  # asphalt
    _rect(img, 0, road_top - 2, w, road_top + 1, (0.65, 0.65, 0.62))  # kerb
    # Dashed centre line (vectorised: mask on x coordinate).
    lane_y = road_top + int(0.45 * (h - road_top))
    xs = np.arange(w)
    dash = (xs // 28) % 2 == 0
    img[lane_y - 2 : lane_y + 2, dash] = (0.90, 0.85, 0.55)

    # Buildings: rectangles standing on the horizon, with a grid of windows.
    x = 0
    palette = np.array(
        [[0.30, 0.26, 0.30], [0.26, 0.30, 0.36], [0.36, 0.30, 0.25], [0.22, 0.24, 0.28], [0.34, 0.34, 0.38]], np.float32
    )
    while x < w:
        bw = int(rng.integers(int(0.10 * h), int(0.28 * h)))
        bh = int(rng.integers(int(0.22 * h), int(0.55 * h)))
        col = palette[rng.integers(len(palette))]
        y0 = horizon - bh
        x1 = min(x + bw, w)
        img[y0:horizon, x:x1] = col
        # Window grid (vectorised over the building's box).
        wy, wx = np.mgrid[y0:horizon, x:x1]
        cell_w, cell_h = 12, 16
        lx, ly = (wx - x) % cell_w, (wy - y0) % cell_h
        in_window = (lx >= 4) & (lx < 9) & (ly >= 5) & (ly < 12) & (wx - x >= 4) & (x1 - wx >= 4) & (horizon - wy >= 8)
        # Which windows are lit: random per window cell.
        cells_x = (x1 - x) // cell_w + 1
        cells_y = bh // cell_h + 1
        lit = rng.random((cells_y, cells_x)) < 0.45
        warm = rng.uniform(0.75, 1.0, (cells_y, cells_x)).astype(np.float32)
        cy, cx = (wy - y0) // cell_h, (wx - x) // cell_w
        m = in_window & lit[cy, cx]
        k = warm[cy, cx][m][:, None]
        img[y0:horizon, x:x1][m] = k * np.array([1.0, 0.85, 0.50], np.float32)
        dark_win = in_window & ~lit[cy, cx]
        img[y0:horizon, x:x1][dark_win] = col * 0.6
        x = x1 + int(rng.integers(2, 10))

    # Street lamps on the pavement with a warm glow.
    for lx in range(40, w, 170):
        _rect(img, lx - 1, horizon - int(0.30 * h), lx + 2, road_top - 2, (0.15, 0.15, 0.16))
        ly = horizon - int(0.30 * h)
        _soft_disc(img, lx, ly, 4, (1.0, 0.95, 0.70))
        _glow(img, lx, ly, 0.06 * h, (1.0, 0.80, 0.45), strength=0.55)
        _glow(img, lx, road_top + 4, 0.08 * h, (0.6, 0.45, 0.25), strength=0.35)

    return img, horizon, road_top, lane_y


def draw_car(img, x, y_base, length, color, facing_right):
    """Draw a simple car (body, cabin, wheels, head/tail lights) in place."""
    body_h = 0.32 * length
    cab_h = 0.22 * length
    _rect(img, x, y_base - body_h, x + length, y_base - 0.10 * length, color)
    cab_x0 = x + 0.22 * length
    cab_x1 = x + 0.72 * length
    _rect(img, cab_x0, y_base - body_h - cab_h, cab_x1, y_base - body_h, np.asarray(color, np.float32) * 0.8)
    _rect(img, cab_x0 + 3, y_base - body_h - cab_h + 3, cab_x1 - 3, y_base - body_h, (0.35, 0.45, 0.55))  # windows
    wr = 0.11 * length
    for wx in (x + 0.22 * length, x + 0.78 * length):
        _soft_disc(img, wx, y_base - wr, wr, (0.05, 0.05, 0.05))
        _soft_disc(img, wx, y_base - wr, wr * 0.45, (0.5, 0.5, 0.5))
    front_x = x + length if facing_right else x
    back_x = x if facing_right else x + length
    ly = y_base - 0.24 * length
    _soft_disc(img, front_x, ly, 0.05 * length, (1.0, 1.0, 0.9))
    _glow(
        img, front_x + (1 if facing_right else -1) * 0.35 * length, ly, 0.22 * length, (1.0, 0.95, 0.75), strength=0.55
    )
    _soft_disc(img, back_x, ly, 0.04 * length, (1.0, 0.1, 0.05))
    _glow(img, back_x, ly, 0.08 * length, (0.9, 0.1, 0.05), strength=0.5)


def render_frames(width, height, n_frames, seed, pan_px=1.5):
    """Yield clean float32 RGB frames (H, W, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    world_w = width + int(np.ceil(pan_px * n_frames)) + 8
    bg, horizon, road_top, lane_y = render_background(world_w, height, rng)

    # Cars: each one is placed so that it passes the centre of the frame at a
    # random time in the middle of the clip; odd cars drive right-to-left on
    # the near lane.  Speeds are relative to the street (the pan is added below).
    car_colors = [(0.85, 0.15, 0.10), (0.15, 0.45, 0.85), (0.95, 0.80, 0.15), (0.20, 0.75, 0.35)]
    colors = rng.permutation(len(car_colors))
    # Far-lane cars pass the centre early / late so they never overlap.
    centre_windows = [(0.10, 0.40), (0.30, 0.70), (0.60, 0.90)]
    cars = []
    for i in range(3):
        right = i % 2 == 0
        # Near-lane cars are drawn a bit larger (perspective).
        length = float(rng.uniform(0.20, 0.24) * height) * (1.0 if right else 1.25)
        y = float(lane_y - 6) if right else float(height - 0.06 * height)
        speed = float(rng.uniform(5.0, 9.0)) * width / 640.0 * (1 if right else -1)
        f_centre = float(rng.uniform(*centre_windows[i])) * n_frames
        # World x at frame 0 such that screen x == centre at f_centre.
        x0 = (width - length) / 2 + pan_px * f_centre - speed * f_centre
        color = car_colors[int(colors[i])]
        cars.append((y, x0, speed, length, color, right))
    cars.sort(key=lambda c: c[0])  # far lane first so near cars overlap it

    for f in range(n_frames):
        off = pan_px * f
        o0 = int(np.floor(off))
        frac = np.float32(off - o0)
        # Sub-pixel pan via linear interpolation between two integer crops.
        frame = bg[:, o0 : o0 + width] * (1 - frac) + bg[:, o0 + 1 : o0 + 1 + width] * frac
        frame = np.ascontiguousarray(frame)
        for y, x0, speed, length, col, right in cars:
            # World position minus camera offset gives the screen position.
            draw_car(frame, x0 + speed * f - off, y, length, col, right)
        yield np.clip(frame, 0.0, 1.0)


# --------------------------------------------------------------------------
# MBLLEN-style low-light synthesis
# --------------------------------------------------------------------------


def darken(clean, gamma, scale, peak, rng):
    """MBLLEN synthesis: gamma darkening + Poisson shot noise -> uint8 RGB."""
    dark = scale * np.power(clean, gamma, dtype=np.float32)
    noisy = rng.poisson(dark * peak).astype(np.float32) / peak
    return np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------


def synth_audio(seconds, sample_rate, rng):
    """Return a (2, N) float32 stereo signal in [-1, 1]."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    # Low hum (50 Hz mains-like, with harmonics).
    hum = 0.10 * np.sin(2 * np.pi * 50 * t) + 0.05 * np.sin(2 * np.pi * 100 * t) + 0.02 * np.sin(2 * np.pi * 150 * t)
    # A short rising chirp (600 -> 1200 Hz, 150 ms) at the start of every second.
    tau = np.mod(t, 1.0)
    dur = 0.15
    k = (1200.0 - 600.0) / dur
    phase = 2 * np.pi * (600.0 * tau + 0.5 * k * tau**2)
    env = np.where(tau < dur, np.sin(np.pi * np.clip(tau / dur, 0, 1)) ** 2, 0.0)
    chirp = 0.30 * env * np.sin(phase)
    # Soft engine rumble: low-passed noise that pans left -> right.
    noise = rng.standard_normal(n)
    kernel = np.ones(400) / 400.0
    rumble = 0.6 * np.convolve(noise, kernel, mode="same")
    pan = np.clip(t / max(seconds, 1e-6), 0.0, 1.0)
    left = hum + chirp + rumble * (1 - pan)
    right = hum + chirp + rumble * pan
    sig = np.stack([left, right]).astype(np.float32)
    # Short fade in/out to avoid clicks.
    fade = min(int(0.01 * sample_rate), n // 2)
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        sig[:, :fade] *= ramp
        sig[:, n - fade :] *= ramp[::-1]
    return np.clip(sig, -1.0, 1.0)


# --------------------------------------------------------------------------
# Encoding / verification
# --------------------------------------------------------------------------


def write_clip(args):
    n_frames = int(round(args.fps * args.seconds))
    rng_noise = np.random.default_rng(args.seed + 1)
    rng_audio = np.random.default_rng(args.seed + 2)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    luma_sum = 0.0
    with av.open(args.out, mode="w", options={"movflags": "+faststart"}) as container:
        vs = container.add_stream("libx264", rate=args.fps)
        vs.width, vs.height = args.width, args.height
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": str(args.crf), "preset": args.preset}
        cc = vs.codec_context
        cc.colorspace = Colorspace.ITU709
        cc.color_range = ColorRange.MPEG
        cc.color_primaries = ColorPrimaries.BT709
        cc.color_trc = ColorTrc.BT709

        sr = args.sample_rate
        as_ = container.add_stream("aac", rate=sr, layout="stereo")
        as_.options = {"b": "96k"}

        for i, clean in enumerate(render_frames(args.width, args.height, n_frames, args.seed)):
            rgb = darken(clean, args.gamma, args.scale, args.peak, rng_noise)
            luma_sum += float((rgb.astype(np.float32) @ LUMA_709).mean())
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(
                format="yuv420p",
                src_colorspace=Colorspace.ITU709,
                dst_colorspace=Colorspace.ITU709,
                src_color_range=ColorRange.JPEG,
                dst_color_range=ColorRange.MPEG,
                dst_color_trc=ColorTrc.BT709,
                dst_color_primaries=ColorPrimaries.BT709,
            )
            frame.pts = i
            for pkt in vs.encode(frame):
                container.mux(pkt)
        for pkt in vs.encode(None):
            container.mux(pkt)

        audio = synth_audio(n_frames / args.fps, sr, rng_audio)
        chunk = 1024  # AAC frame size
        for start in range(0, audio.shape[1], chunk):
            block = np.ascontiguousarray(audio[:, start : start + chunk])
            af = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            af.sample_rate = sr
            af.pts = start
            for pkt in as_.encode(af):
                container.mux(pkt)
        for pkt in as_.encode(None):
            container.mux(pkt)

    return n_frames, luma_sum / n_frames


def verify(path, expected_frames, max_bytes):
    size = os.path.getsize(path)
    n_video = 0
    y_sum = 0.0
    with av.open(path) as c:
        assert c.streams.video, "no video stream"
        assert c.streams.audio, "no audio stream"
        v = c.streams.video[0]
        a = c.streams.audio[0]
        info = dict(
            codec=v.codec_context.name,
            pix_fmt=v.codec_context.pix_fmt,
            colorspace=int(v.codec_context.colorspace),
            color_range=int(v.codec_context.color_range),
            audio=f"{a.codec_context.name} {a.codec_context.sample_rate} Hz {a.codec_context.layout.name}",
        )
        a_samples = 0
        for fr in c.decode(v, a):  # one demux pass over both streams
            if isinstance(fr, av.AudioFrame):
                a_samples += fr.samples
                continue
            n_video += 1
            # Y' plane (limited range, 16..235) of the decoded frame.
            y = fr.to_ndarray(format="yuv420p")[: fr.height].astype(np.float32)
            y_sum += float(y.mean())
    ok = True
    if n_video != expected_frames:
        print(f"FAIL: {n_video} video frames decoded, expected {expected_frames}")
        ok = False
    if size > max_bytes:
        print(f"FAIL: file is {size} bytes > {max_bytes}")
        ok = False
    if a_samples == 0:
        print("FAIL: audio stream decodes to no samples")
        ok = False
    mean_y_tv = y_sum / max(n_video, 1)
    # Mean luma on the usual 0..255 (full-range) scale: undo the 16..235 mapping.
    mean_luma = (mean_y_tv - 16.0) * 255.0 / 219.0
    info.update(size=size, frames=n_video, audio_samples=a_samples, mean_y_tv=mean_y_tv, mean_luma=mean_luma)
    return ok, info


def parse_args(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(here, "dark_street.mp4"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--gamma", type=float, default=3.0, help="darkening gamma (MBLLEN: 2-3.5)")
    p.add_argument("--scale", type=float, default=1.0, help="extra exposure scale after gamma")
    p.add_argument("--peak", type=float, default=200.0, help="Poisson peak photon count")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--preset", default="medium")
    p.add_argument("--sample-rate", type=int, default=48000)
    p.add_argument("--max-mb", type=float, default=2.0, help="fail if the clip is larger")
    args = p.parse_args(argv)
    if args.width % 2 or args.height % 2:
        p.error("width and height must be even for yuv420p")
    return args


def main(argv=None):
    args = parse_args(argv)
    n_frames, src_luma = write_clip(args)
    ok, info = verify(args.out, n_frames, int(args.max_mb * 1024 * 1024))
    print(
        f"{'OK' if ok else 'FAILED'}: {args.out} {info['size'] / 1024:.0f} KiB, "
        f"{info['frames']} frames {args.width}x{args.height}@{args.fps} "
        f"{info['codec']}/{info['pix_fmt']} (colorspace={info['colorspace']}, "
        f"range={info['color_range']}), audio {info['audio']} "
        f"({info['audio_samples']} samples), mean luma {info['mean_luma']:.1f}/255 "
        f"(decoded Y' {info['mean_y_tv']:.1f} in 16-235; pre-encode RGB {src_luma:.1f}), "
        f"seed={args.seed} gamma={args.gamma} scale={args.scale} peak={args.peak:g}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
