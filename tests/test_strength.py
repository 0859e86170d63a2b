"""Strength in each method's own terms: 0 is the input, 1 the official output bit for bit, and
in between the formula the module documents, checked against independent computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
from vidlight.models.strength import apply_strength, enhance, renders, strength_phases, terms_of
from vidlight.pipeline.enhancer import FrameEnhancer
from vidlight.pipeline.tiling import tiled_forward

from formula import fixture_weights

CPU = torch.device("cpu")


def _dark_batch(n: int = 2, h: int = 40, w: int = 56, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 0.3


@pytest.fixture(scope="module")
def models(shared_dir: Path, tmp_path_factory) -> dict:
    """Every registered model with the fixture weights (official tensors where a repository has them)."""
    import os

    folder = tmp_path_factory.mktemp("fixture-weights")
    previous = os.environ.get("VIDLIGHT_WEIGHTS_DIR")
    os.environ["VIDLIGHT_WEIGHTS_DIR"] = str(shared_dir / "weights")
    try:
        return {
            name: vidlight.load_model(name, weights=fixture_weights(name, shared_dir, folder))
            for name in vidlight.list_models()
        }
    finally:
        if previous is None:
            os.environ.pop("VIDLIGHT_WEIGHTS_DIR", None)
        else:
            os.environ["VIDLIGHT_WEIGHTS_DIR"] = previous


@pytest.mark.parametrize("name", vidlight.list_models())
def test_strength_one_is_the_official_output_and_zero_the_input(models, name):
    model = models[name]
    x = _dark_batch()
    with torch.inference_mode():
        official = model(x)
        terms = terms_of(model, x)
        assert torch.equal(apply_strength(model, x, terms, 1.0), official)
        assert torch.equal(apply_strength(model, x, terms, torch.ones(2)), official)
        assert torch.equal(apply_strength(model, x, terms, 0.0).clamp(0, 1), x)
        # Per frame: frame 0 at 1, frame 1 at 0.
        mixed = apply_strength(model, x, terms, torch.tensor([1.0, 0.0]))
        assert torch.equal(mixed[0], official[0]) and torch.equal(mixed[1].clamp(0, 1), x[1])


@pytest.mark.parametrize("name", vidlight.list_models())
def test_renders_at_every_grid_strength_are_apply_strength_at_each(models, name):
    """The exposure preview's renders (one call for the whole grid) against one apply_strength
    call per strength; the terms are left as they were."""
    model = models[name]
    x = _dark_batch(h=24, w=32)
    grid = (0.0, 0.3, 0.75, 1.0)
    with torch.inference_mode():
        terms = terms_of(model, x)
        kept = terms.clone()
        got = renders(model, x, terms, grid)
        assert got.shape == (len(grid), *apply_strength(model, x, terms, 1.0).shape)
        for i, s in enumerate(grid):
            one = apply_strength(model, x, terms, s)
            assert (got[i].clamp(0, 1) - one.clamp(0, 1)).abs().max() < 1e-6, s
        assert torch.equal(got[grid.index(1.0)].clamp(0, 1), model(x).clamp(0, 1))
        assert torch.equal(terms, kept)


def test_sci_strength_divides_by_the_illumination_to_the_power_s(models):
    model = models["sci"]
    x = _dark_batch()
    with torch.inference_mode():
        illumination = model.estimate_illumination(x).numpy().astype(np.float64)
        got = enhance(model, x, 0.4).numpy()
    expected = np.clip(x.numpy() / illumination**0.4, 0, 1)
    assert np.abs(got - expected).max() < 1e-6


@pytest.mark.parametrize("name", ["zero-dce", "zero-dce++"])
def test_curve_strength_scales_the_curve_parameters(models, name):
    model = models[name]
    x = _dark_batch()
    with torch.inference_mode():
        curves = model.estimate_curves(x).numpy().astype(np.float64)
        got = enhance(model, x, 0.3).numpy()
    maps = np.split(curves, 8, axis=1) if name == "zero-dce" else [curves] * 8
    y = x.numpy().astype(np.float64)
    for alpha in maps:  # LE(x) = x + a (x^2 - x), with a scaled by the strength
        y = y + 0.3 * alpha * (y * y - y)
    assert np.abs(got - y).max() < 1e-5


@pytest.mark.parametrize("name", ["mbllen", "mbllen-video", "enlightengan", "llflow-small"])
def test_end_to_end_networks_blend_with_the_input(models, name):
    model = models[name]
    x = _dark_batch()
    with torch.inference_mode():
        y = model(x).numpy().astype(np.float64)
        got = enhance(model, x, 0.25).numpy()
    assert np.abs(got - (0.75 * x.numpy() + 0.25 * y)).max() < 1e-6


@pytest.mark.parametrize("name", ["kind", "kind++"])
def test_retinex_strength_raises_the_illumination_gain(models, name):
    """KinD's: the frame times ((I^2 + (1 - I) I') / I * stretch) ** s, faded into the official
    output by s; computed here from the official intermediates."""
    model = models[name]
    x = _dark_batch()
    s = 0.5
    with torch.inference_mode():
        stages = model.stages(x)
        got = enhance(model, x, s).numpy().astype(np.float64)
    xs = x.numpy().astype(np.float64)
    stretch = 1 / np.maximum(xs.max(axis=(1, 2, 3), keepdims=True) - xs.min(axis=(1, 2, 3), keepdims=True), 0.001)
    i = stages["decomI"].numpy().astype(np.float64)
    adjusted = stages["adjI"].numpy().astype(np.float64) if name == "kind" else 1.0
    out = stages["out"].numpy().astype(np.float64)
    gain = (i * i + (1 - i) * adjusted) / i * stretch
    expected = (1 - s) * np.clip(xs * gain**s, 0, 1) + s * out
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("name", ["kind", "mbllen"])
def test_strength_on_tiles_is_close_to_whole_frames(models, name):
    model = models[name]
    x = _dark_batch(1, 96, 128)
    with torch.inference_mode():
        whole = enhance(model, x, 0.5)
        terms = tiled_forward(model, x, 64, 32, split=strength_phases(model))
        tiled = apply_strength(model, x, terms, 0.5)
    assert (tiled - whole).abs().mean() < 0.02


def test_enhancer_at_strength_zero_returns_the_input_and_at_one_the_official_frames():
    model = vidlight.load_model("sci")
    g = np.random.default_rng(3)
    frames = [g.integers(0, 80, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    assert np.array_equal(FrameEnhancer(model, device=CPU, strength=0.0)(frames), np.stack(frames))
    official = FrameEnhancer(model, device=CPU)(frames)
    assert np.array_equal(FrameEnhancer(model, device=CPU, strength=1.0)(frames), official)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
        direct = (model(x).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(official, direct)


@pytest.mark.parametrize("peak", [255, 65535])
def test_sci_cpu_strips_in_one_pass_give_the_generic_paths_levels(peak: int, monkeypatch: pytest.MonkeyPatch):
    """On a CPU the enhancer runs SCI's strips from the frame's samples to the output's levels in
    one compiled pass: the same levels, bit for bit, as the generic path (the model's terms and
    strength in torch, then quantised), at the official strength and below it, for 8- and 16-bit
    frames cut into several strips; and within a level of x / L ** s computed by torch's own
    network (the path autograd takes)."""
    from vidlight.models.sci import SCI

    model = vidlight.load_model("sci")
    g = np.random.default_rng(peak)
    dtype = np.uint8 if peak == 255 else np.uint16
    frames = [(g.random((330, 640, 3)) ** 2 * 0.35 * peak).astype(dtype) for _ in range(2)]
    assert 160_000 // 640 < 330  # two strips per frame
    calls = []
    compiled = SCI.strip_kernel

    def counted(self):
        kernel = compiled(self)
        assert kernel is not None

        def count(*args):
            calls.append(args[1:3])
            kernel(*args)

        return count

    for strength in (1.0, 0.7, 0.0):
        for keep in (False, True):
            monkeypatch.setattr(SCI, "strip_kernel", counted)
            got = FrameEnhancer(model, device=CPU, strength=strength, keep_precision=keep)(frames)
            assert (250, 330) in calls
            monkeypatch.setattr(SCI, "strip_kernel", lambda self: None)
            generic = FrameEnhancer(model, device=CPU, strength=strength, keep_precision=keep)(frames)
            assert got.dtype == generic.dtype and np.array_equal(got, generic), (strength, keep)
        out_peak = 65535 if got.dtype == np.uint16 else 255
        with torch.enable_grad():
            x = torch.from_numpy(np.stack(frames).astype(np.float32) / peak).permute(0, 3, 1, 2)
            illumination = model.estimate_illumination(x).detach()
        expected = (x / illumination**strength).clamp(0, 1) * out_peak
        levels = (torch.from_numpy(got.astype(np.float32)).permute(0, 3, 1, 2) - expected).abs()
        assert levels.max() <= 0.5 + 1e-3 * out_peak / 255, strength
    if peak == 255:
        assert np.array_equal(got, np.stack(frames).astype(np.uint16) * 257)  # strength 0: the input


def test_sci_strip_kernel_follows_the_network_it_is_given(monkeypatch: pytest.MonkeyPatch):
    """The compiled strips read as many rows of context as the network is deep (a block applied
    twice: a halo of 4, the same levels as the generic strips), and an estimator the kernel is
    not written for (4 features) takes the generic path."""
    from vidlight.models.sci import SCI, IlluminationEstimator

    deeper = SCI()
    deeper.illumination = IlluminationEstimator(layers=2)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in deeper.parameters():
            p.copy_(torch.randn(p.shape) * 0.4)
    deeper.eval()
    assert deeper.receptive_halo == 4
    frames = [np.random.default_rng(5).integers(0, 90, (300, 640, 3), dtype=np.uint8)]
    got = FrameEnhancer(deeper, device=CPU, strength=0.8)(frames)
    monkeypatch.setattr(SCI, "strip_kernel", lambda self: None)
    # The generic strips read receptive_halo rows of context: with too few they would have seams.
    assert np.array_equal(got, FrameEnhancer(deeper, device=CPU, strength=0.8)(frames))
    monkeypatch.undo()

    wide = SCI()
    wide.illumination = IlluminationEstimator(channels=4).eval()
    assert wide.strip_kernel() is None
    assert FrameEnhancer(wide, device=CPU)(frames).shape == (1, 300, 640, 3)
    kernel = vidlight.load_model("sci").strip_kernel()
    assert kernel is not None
    with pytest.raises(ValueError):
        kernel(frames[0], 0, 8, 1.0, np.empty((8, 640, 3), np.uint8)[:, ::2])  # rows 0..8 into too narrow an array
    with pytest.raises(TypeError):
        kernel(frames[0].astype(np.float32), 0, 8, 1.0, np.empty((8, 640, 3), np.uint8))


def test_sci_renders_run_under_autograd_and_take_an_empty_batch():
    """With autograd recording (a model being trained) the preview's renders take the torch
    formula, within float rounding of the OpenCV path; an empty batch gives an empty set of
    renders."""
    from vidlight.models.sci import SCI

    model = SCI()
    x = _dark_batch(n=1, h=12, w=16)
    grid = (0.0, 0.5, 1.0)
    with torch.enable_grad():
        recorded = renders(model, x, terms_of(model, x), grid)
    assert recorded.requires_grad
    with torch.inference_mode():
        plain = renders(model, x, terms_of(model, x), grid)
        assert (recorded.detach() - plain).abs().max() < 1e-6
        empty = x[:0]
        assert renders(model, empty, terms_of(model, empty), (0.0, 1.0)).shape == (2, 0, 3, 12, 16)


@pytest.mark.parametrize("name", ["zero-dce", "zero-dce++"])
def test_curve_renders_on_a_cpu_are_the_generic_renders_bit_for_bit(models, name, monkeypatch):
    """A curve method's preview renders at every grid strength, made in one compiled pass on a
    CPU, equal the generic path's (the batch repeated per strength through apply_strength) bit
    for bit, for either memory layout of the frames; under autograd the generic path runs."""
    from vidlight.models.strength import renders
    from vidlight.pipeline.exposure import STRENGTH_GRID

    model = models[name]
    cls = type(model)
    x = _dark_batch(n=3, h=20, w=36, seed=4)
    with torch.inference_mode():
        terms = terms_of(model, x)
        assert model.strength_renders(x, terms, STRENGTH_GRID) is not None
        compiled = [renders(model, x.contiguous(memory_format=m), terms, STRENGTH_GRID) for m in LAYOUTS]
        monkeypatch.setattr(cls, "strength_renders", lambda self, x, terms, grid: None)
        generic = renders(model, x, terms, STRENGTH_GRID)
    assert generic.shape == (len(STRENGTH_GRID), 3, 3, 20, 36)
    for got in compiled:
        assert torch.equal(got, generic)
    monkeypatch.undo()
    with torch.enable_grad():
        assert model.strength_renders(x.requires_grad_(), terms, STRENGTH_GRID) is None


LAYOUTS = (torch.contiguous_format, torch.channels_last)


def test_curve_renders_leave_curves_that_do_not_fit_to_the_general_path():
    """Curves of another batch or size than the frames are not read by the compiled pass (it does
    not check bounds): the general path gets them and says what does not fit."""
    from vidlight.models.zero_dce import curve_renders

    x = _dark_batch(n=2, h=8, w=12)
    assert curve_renders(x, torch.zeros(1, 3, 8, 12), (0.0, 1.0)) is None
    assert curve_renders(x, torch.zeros(2, 3, 8, 10), (0.0, 1.0)) is None
    assert curve_renders(x, torch.zeros(2, 6, 8, 12), (0.0, 1.0)) is None
    assert curve_renders(x, torch.zeros(2, 24, 8, 12), (0.0, 1.0)) is not None
