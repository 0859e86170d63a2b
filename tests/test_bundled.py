"""The bundled default SCI weights: what the catalogue says about them is true."""

from __future__ import annotations

import vidlight
from vidlight.metrics import score_pairs
from vidlight.weights import ASSETS_DIR, get_weights, sha256_of


def test_default_sci_weights_are_bundled_and_verified():
    record = get_weights("sci-vidlight")
    path = ASSETS_DIR / record.file_name
    assert record.bundled and path.is_file()
    assert path.stat().st_size == record.size_bytes
    assert sha256_of(path) == record.sha256
    model = vidlight.load_model("sci")  # offline (the autouse fixture), no weights directory
    assert model.weights_name == "sci-vidlight"
    assert sum(p.numel() for p in model.parameters()) == record.num_params


def test_bundled_sci_lol_scores(shared_dir):
    """Recompute the LOL eval15 figures the catalogue states, and hold the bar: at least the
    official medium.pt's PSNR, both quantised by rounding (the pipeline's quantiser)."""
    lol = shared_dir / "data" / "lol_eval15"
    record = get_weights("sci-vidlight")
    ours = score_pairs(vidlight.load_model("sci"), lol / "low", lol / "high", rounding="round")
    assert abs(ours["psnr"] - record.metrics["lol_eval15"]["psnr"]) < 2e-3
    assert abs(ours["ssim"] - record.metrics["lol_eval15"]["ssim"]) < 2e-4
    medium = score_pairs(
        vidlight.load_model("sci", weights=str(shared_dir / "weights" / "sci" / "medium.pt")),
        lol / "low",
        lol / "high",
        rounding="round",
    )
    assert abs(medium["psnr"] - 14.854) < 2e-3  # the official weights, scored the same way
    assert ours["psnr"] >= medium["psnr"]
