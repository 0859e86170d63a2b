"""LLFlow against the official PyTorch implementation's outputs (../shared/reference/llflow/).

The fixtures were produced by the official ``test_unpaired.py`` path (CPU fp32) with the
README's LLFlow formula weights, since the official checkpoints are only on Google Drive. The
weights are regenerated here from the official key lists, saved as ``.npz`` and loaded through
``load_model``. The network input, flow conditions, colour map, latent, raw (unclamped) and
final outputs of the 64x96 crop must agree within 1e-4 max-abs (the full-size fixtures are
left out: the standard net takes ~40 s per 400x600 frame on one thread).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
from vidlight import WeightsError, load_model
from vidlight.models.llflow import LLFlow
from vidlight.models.registry import get_model_spec
from vidlight.train.data import read_rgb, to_tensor

from formula import llflow_formula_tensor
from reference import max_diff, reference_dir

ATOL = 1e-4
CASE = "lol1_crop"
VARIANTS = {"llflow": "standard", "llflow-small": "small"}
FILES = {  # ours -> official file stem
    "out": "out",
    "netout": "netout",
    "colormap": "colormap",
    "z": "z",
    "fea_up0": "cond_fea_up0",
    "fea_up1": "cond_fea_up1",
    "fea_up2": "cond_fea_up2",
}


def _keys(shared_dir: Path, variant: str) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for line in (reference_dir(shared_dir, "llflow") / f"keys_{variant}.txt").read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            out.append((key, tuple(int(s) for s in shape.split(","))))
    return out


@pytest.fixture(scope="module")
def npz_paths(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("llflow")
    paths = {}
    for name, variant in VARIANTS.items():
        paths[name] = folder / f"{variant}.npz"
        np.savez(paths[name], **{k: llflow_formula_tensor(k, s) for k, s in _keys(shared_dir, variant)})
    return paths


@pytest.fixture(scope="module")
def stages(shared_dir: Path, npz_paths: dict[str, Path]) -> dict[str, dict[str, torch.Tensor]]:
    x = to_tensor(read_rgb(reference_dir(shared_dir, "llflow") / f"in_{CASE}.png"))
    out = {}
    for name in VARIANTS:
        model = load_model(name, weights=str(npz_paths[name]))
        with torch.no_grad():
            out[name] = model.stages(x)
            assert torch.equal(model(x), out[name]["out"])
    return out


def test_default_weights_are_the_drive_checkpoints() -> None:
    for name, conf in (("llflow", "LOL-pc"), ("llflow-small", "LOL_smallNet")):
        assert name in vidlight.list_models()
        assert get_model_spec(name).default_weights is not None
        with pytest.raises(WeightsError) as info:
            load_model(name)
        message = str(info.value)
        assert "drive.google.com" in message and f"llflow/{conf}.pth" in message and "\n" not in message


def test_a_checkpoint_put_where_the_error_says_is_used(
    npz_paths: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official Drive file saved as the error says (a .pth state dict with ``module.``)."""
    state = {f"module.{k}": torch.from_numpy(v) for k, v in np.load(npz_paths["llflow-small"]).items()}
    (tmp_path / "llflow").mkdir()
    torch.save(state, tmp_path / "llflow" / "LOL_smallNet.pth")
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(tmp_path))
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    ours = load_model("llflow-small")(x)
    assert torch.equal(ours, load_model("llflow-small", weights=str(npz_paths["llflow-small"]))(x))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_weights_layout(shared_dir: Path, name: str) -> None:
    keys = _keys(shared_dir, VARIANTS[name])
    model = LLFlow(VARIANTS[name])
    state = model.state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == keys
    n = {"llflow": 38_859_481, "llflow-small": 5_429_849}[name]
    assert sum(p.numel() for p in model.parameters()) == n


def test_netin_matches_official(shared_dir: Path, stages: dict[str, dict[str, torch.Tensor]]) -> None:
    official = np.load(reference_dir(shared_dir, "llflow") / f"netin_{CASE}.npy")
    for name in VARIANTS:
        assert max_diff(stages[name]["netin"], official, "netin") <= ATOL


@pytest.mark.parametrize("name", list(VARIANTS))
def test_matches_official(shared_dir: Path, stages: dict[str, dict[str, torch.Tensor]], name: str) -> None:
    folder = reference_dir(shared_dir, "llflow") / VARIANTS[name]
    for ours, stem in FILES.items():
        path = folder / f"{stem}_{CASE}.npy"
        diff = max_diff(stages[name][ours], np.load(path), f"{name} {stem}")
        print(f"{name} {stem}: max abs diff {diff:.3g}")
        assert diff <= ATOL, f"{name} {stem}: max abs diff {diff:.3g} > {ATOL}"


def test_every_crop_file_is_covered(shared_dir: Path) -> None:
    for variant in VARIANTS.values():
        present = {p.name for p in (reference_dir(shared_dir, "llflow") / variant).glob(f"*_{CASE}.npy")}
        assert present == {f"{stem}_{CASE}.npy" for stem in FILES.values()}


@pytest.mark.parametrize("size", [(37, 53), (16, 32), (5, 7)])
def test_any_frame_size(npz_paths: dict[str, Path], size: tuple[int, int]) -> None:
    model = load_model("llflow-small", weights=str(npz_paths["llflow-small"]))
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("case", ["random", "dark", "two-levels", "one-level", "gap-at-zero"])
def test_equalize_hist_is_opencvs(case: str) -> None:
    """The preprocessing's histogram equalisation (torch, on the frames' device) against
    cv2.equalizeHist, plane by plane."""
    import cv2

    from vidlight.models.llflow import equalize_hist

    rng = np.random.default_rng(4)
    planes = {
        "random": rng.integers(0, 256, (2, 3, 37, 41)),
        "dark": rng.integers(0, 256, (2, 3, 37, 41)) // 16,
        "two-levels": rng.choice([7, 200], (2, 3, 37, 41)),
        "one-level": np.full((2, 3, 37, 41), 93),
        "gap-at-zero": rng.integers(120, 131, (2, 3, 37, 41)),
    }[case].astype(np.uint8)
    got = equalize_hist(torch.from_numpy(planes)).numpy()
    want = np.stack([[cv2.equalizeHist(np.ascontiguousarray(c)) for c in frame] for frame in planes])
    assert np.array_equal(got, want)


def test_padding_wider_than_the_frame_mirrors_again() -> None:
    """A 5 x 3 frame padded to 16 x 16: cv2.copyMakeBorder(BORDER_REFLECT) applied until the pads
    are done, as the official code pads, reproduced by the preprocessing's index arithmetic."""
    import cv2

    frame = np.random.default_rng(8).integers(0, 256, (5, 3, 3)).astype(np.uint8)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    netin, (top, bottom, left, right) = LLFlow.preprocess(x)
    want, pads = frame, [top, bottom, left, right]
    while any(pads):
        h, w = want.shape[:2]
        step = [min(pads[0], h), min(pads[1], h), min(pads[2], w), min(pads[3], w)]
        want = cv2.copyMakeBorder(want, *step, cv2.BORDER_REFLECT)
        pads = [a - b for a, b in zip(pads, step)]
    got = torch.exp(netin[0, :3]) - 1e-3  # the log channels give the padded frame back
    assert want.shape[:2] == (16, 16)
    assert np.abs(got.permute(1, 2, 0).numpy() * 255 - want).max() < 0.01
