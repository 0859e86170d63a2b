"""The weights catalogue: honest metadata, lookup order, verified downloads, clear errors."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import vidlight
import vidlight.weights
from vidlight import VidlightError, WeightsError, load_model
from vidlight.weights import ASSETS_DIR, download, get_weights, list_weights, resolve

from rtsp import closed_port


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- catalogue metadata (torchvision's test_schema_meta_validation) ----------------


def test_catalogue_is_not_empty() -> None:
    names = {w.name for w in list_weights()}
    assert {"sci-easy", "sci-medium", "sci-difficult", "zero-dce", "zero-dce++"} <= names


@pytest.mark.parametrize("name", [w.name for w in list_weights() if w.sha256 is not None])
def test_catalogue_metadata_matches_file(name: str, shared_dir: Path, official_weights_dir: Path) -> None:
    record = get_weights(name)
    path = (ASSETS_DIR / record.file_name) if record.bundled else (official_weights_dir / record.relpath)
    assert path.is_file(), f"{record.name}: {path} is missing"
    assert record.size_bytes == path.stat().st_size
    assert record.sha256 == _sha256(path)
    assert record.model in vidlight.list_models()
    model = load_model(record.model, weights=record.name)
    assert record.num_params == sum(p.numel() for p in model.parameters())


_MANUAL = [w.name for w in list_weights() if w.sha256 is None]


def test_manual_records_are_the_drive_only_checkpoints() -> None:
    """Every model has default weights; the ones with no hash are exactly the checkpoints the
    authors publish only on Google Drive / Baidu (../shared/weights/*/PROVENANCE.md)."""
    assert set(_MANUAL) == {"kind-lol", "kind++-lol", "enlightengan", "llflow-lol", "llflow-lolv2", "llflow-small-lol"}
    for name in vidlight.list_models():
        assert vidlight.models.get_model_spec(name).default_weights is not None, name


@pytest.mark.parametrize("name", _MANUAL)
def test_manual_record_says_what_to_fetch_and_where(name: str, offline_isolated_cache: Path) -> None:
    record = get_weights(name)
    assert record.url is None and record.size_bytes is None and not record.bundled
    assert record.manual and all(m.startswith("https://") or "https://" in m for m in record.manual)
    assert record.license and record.source.startswith("https://github.com/") and record.note
    assert record.model in vidlight.list_models()
    builder = vidlight.models.get_model_spec(record.model).builder
    assert record.num_params == sum(p.numel() for p in builder().parameters())
    with pytest.raises(WeightsError) as info:
        load_model(record.model, weights=record.name)
    message = str(info.value)
    assert "\n" not in message and record.relpath in message and str(offline_isolated_cache) in message
    assert all(page in message for page in record.manual)


def test_llflow_and_enlightengan_records_count_the_official_keys(shared_dir: Path) -> None:
    """num_params against the key lists derived from the official code (not from our models)."""
    for name, keys in (
        ("llflow-lol", "llflow/expected_keys_LOL-pc.txt"),
        ("llflow-lolv2", "llflow/expected_keys_LOLv2-pc.txt"),
        ("llflow-small-lol", "llflow/expected_keys_LOL_smallNet.txt"),
        ("enlightengan", "enlightengan/expected_keys_G_A.txt"),
    ):
        total = 0
        for line in (shared_dir / "weights" / keys).read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            key, shape = line.split("\t")
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
                continue
            total += int(np.prod(json.loads(shape)))
        assert get_weights(name).num_params == total, name


# --- resolution order -----------------------------------------------------------------


def test_weights_dir_with_method_subfolders(official_weights_dir: Path) -> None:
    assert resolve("sci-medium") == official_weights_dir / "sci" / "medium.pt"


def test_flat_weights_dir(shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copyfile(shared_dir / "weights" / "sci" / "medium.pt", flat / "medium.pt")
    monkeypatch.setenv("VIDLIGHT_WEIGHTS_DIR", str(flat))
    assert resolve("sci-medium") == flat / "medium.pt"


def test_cache_is_used_after_weights_dir(
    shared_dir: Path, official_weights_dir: Path, offline_isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = offline_isolated_cache / "weights" / "sci" / "medium.pt"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(shared_dir / "weights" / "sci" / "medium.pt", cached)
    assert resolve("sci-medium") == official_weights_dir / "sci" / "medium.pt"
    monkeypatch.delenv("VIDLIGHT_WEIGHTS_DIR")
    assert resolve("sci-medium") == cached


def test_offline_and_missing_says_where_to_put_it(offline_isolated_cache: Path) -> None:
    with pytest.raises(WeightsError) as info:
        resolve("sci-medium")
    message = str(info.value)
    assert "medium.pt" in message
    assert "put" in message
    assert str(offline_isolated_cache) in message
    assert "\n" not in message
    assert not offline_isolated_cache.exists() or not any(offline_isolated_cache.rglob("*"))


# --- downloads, from a local HTTP server --------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def served(shared_dir: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder holding a copy of sci/medium.pt: (base URL, file)."""
    root = tmp_path / "served"
    root.mkdir()
    source = root / "medium.pt"
    shutil.copyfile(shared_dir / "weights" / "sci" / "medium.pt", source)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", source
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_writes_verified_file(served: tuple[str, Path], tmp_path: Path) -> None:
    base, source = served
    dest = tmp_path / "out" / "sub" / "medium.pt"
    result = download(f"{base}/medium.pt", dest, sha256=_sha256(source), progress=False)
    assert result == dest
    assert dest.read_bytes() == source.read_bytes()
    assert not dest.with_name("medium.pt.tmp").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["medium.pt"]


def test_download_with_wrong_sha256_leaves_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "out" / "medium.pt"
    with pytest.raises(WeightsError, match="sha256"):
        download(f"{base}/medium.pt", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not dest.with_name("medium.pt.tmp").exists()


def test_download_missing_file_raises(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "out" / "nope.pt"
    with pytest.raises(WeightsError, match="could not download"):
        download(f"{base}/nope.pt", dest, sha256="0" * 64, progress=False)
    assert not dest.exists()
    assert not dest.with_name("nope.pt.tmp").exists()


def test_download_unreachable_raises(tmp_path: Path) -> None:
    dest = tmp_path / "x.pt"
    with pytest.raises(WeightsError, match="could not download"):
        download(f"http://127.0.0.1:{closed_port()}/x", dest, sha256="0" * 64, progress=False, timeout_seconds=5)
    assert not dest.exists()
    assert not dest.with_name("x.pt.tmp").exists()


def test_resolve_downloads_into_cache(
    served: tuple[str, Path], offline_isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, source = served
    record = dataclasses.replace(get_weights("sci-medium"), url=f"{base}/medium.pt")
    monkeypatch.setitem(vidlight.weights._CATALOGUE, "sci-medium", record)

    # VIDLIGHT_OFFLINE=1 (set for every test) must win over an available URL.
    with pytest.raises(WeightsError, match="offline"):
        resolve("sci-medium")

    path = resolve("sci-medium", allow_download=True, progress=False)
    assert path == offline_isolated_cache / "weights" / "sci" / "medium.pt"
    assert _sha256(path) == record.sha256 == _sha256(source)
    assert not path.with_name("medium.pt.tmp").exists()
    # Now cached: found without downloading, even offline, and loadable by name.
    assert resolve("sci-medium") == path
    assert sum(p.numel() for p in load_model("sci", weights="sci-medium").parameters()) == record.num_params


def test_resolve_refuses_a_changed_upstream_file(
    served: tuple[str, Path], offline_isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _ = served
    record = dataclasses.replace(get_weights("sci-easy"), url=f"{base}/medium.pt")  # wrong bytes for sci-easy
    monkeypatch.setitem(vidlight.weights._CATALOGUE, "sci-easy", record)
    with pytest.raises(WeightsError, match="sha256"):
        resolve("sci-easy", allow_download=True, progress=False)
    assert not (offline_isolated_cache / "weights" / "sci" / "easy.pt").exists()
    assert not (offline_isolated_cache / "weights" / "sci" / "easy.pt.tmp").exists()


def test_a_failed_download_says_where_to_put_the_file_and_leaves_no_folders(
    offline_isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = dataclasses.replace(get_weights("sci-easy"), url=f"http://127.0.0.1:{closed_port()}/easy.pt")
    monkeypatch.setitem(vidlight.weights._CATALOGUE, "sci-easy", record)
    with pytest.raises(WeightsError) as info:
        resolve("sci-easy", allow_download=True, progress=False)
    message = str(info.value)
    assert "could not download" in message and "$VIDLIGHT_WEIGHTS_DIR/sci/easy.pt" in message
    assert str(offline_isolated_cache / "weights" / "sci" / "easy.pt") in message
    assert not offline_isolated_cache.exists(), "the cache folders made for the download are removed"


# --- wrong weights -----------------------------------------------------------------------


def test_zero_dce_checkpoint_into_sci(shared_dir: Path) -> None:
    path = shared_dir / "weights" / "zero_dce" / "Epoch99.pth"
    with pytest.raises(WeightsError, match=r"'enhance\.in_conv\.0\.weight'") as info:
        load_model("sci", weights=str(path))
    assert "\n" not in str(info.value)


def test_misshaped_tensor_is_named_with_both_shapes(shared_dir: Path, tmp_path: Path) -> None:
    official = torch.load(shared_dir / "weights" / "sci" / "medium.pt", map_location="cpu", weights_only=True)
    arrays = {name: tensor.numpy() for name, tensor in official.items()}
    arrays["enhance.in_conv.0.weight"] = np.zeros((4, 3, 3, 3), np.float32)
    npz = tmp_path / "bad.npz"
    np.savez(npz, **arrays)
    with pytest.raises(WeightsError) as info:
        load_model("sci", weights=str(npz))
    message = str(info.value)
    assert "'enhance.in_conv.0.weight'" in message
    assert "(4, 3, 3, 3)" in message
    assert "(3, 3, 3, 3)" in message
    assert "\n" not in message


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(WeightsError) as info:
        load_model("sci", weights=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("sci", weights=str(tmp_path / "absent.pt"))


def test_unknown_catalogue_name_lists_valid_ones() -> None:
    with pytest.raises(WeightsError) as info:
        load_model("sci", weights="sci-nope")
    message = str(info.value)
    assert "sci-nope" in message
    for name in ("sci-easy", "sci-medium", "sci-difficult"):
        assert name in message

    with pytest.raises(WeightsError) as info:
        get_weights("nope")
    assert all(w.name in str(info.value) for w in list_weights())


def test_catalogue_weights_of_another_model() -> None:
    with pytest.raises(WeightsError, match="zero-dce"):
        load_model("sci", weights="zero-dce")


# --- model lookup ------------------------------------------------------------------------


def test_unknown_model_lists_valid_ones() -> None:
    with pytest.raises(VidlightError) as info:
        load_model("nope")
    message = str(info.value)
    assert "nope" in message
    for name in vidlight.list_models():
        assert name in message


def test_unknown_option() -> None:
    with pytest.raises(VidlightError, match="foo"):
        load_model("sci", foo=1)
