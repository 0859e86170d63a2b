"""The weights catalogue: where each checkpoint lives, how to verify it, how to load it.

Resolution order for a catalogue name: ``$VIDLIGHT_WEIGHTS_DIR`` (laid out as
``<dir>/<method>/<file>``, or flat) -> the package's bundled files -> the local cache
(``$VIDLIGHT_CACHE_DIR``, default ``~/.cache/vidlight``) -> download (sha256-checked,
written to ``*.tmp`` and renamed). ``VIDLIGHT_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vidlight.errors import WeightsError

ASSETS_DIR = Path(__file__).parent / "assets"


@dataclass(frozen=True)
class Weights:
    """One checkpoint in the catalogue.

    Attributes:
        name: catalogue name, e.g. ``"sci-medium"``.
        model: the registered model it belongs to.
        relpath: path below a weights directory, ``<method>/<file>`` (a directory when
            ``directory`` is set: a TF1 checkpoint set).
        url: where the official file can be downloaded (None: bundled or manual).
        sha256: hex digest of the file; None when the authors publish the file only on a
            share that cannot be fetched by a script (then ``manual`` says where it is).
        size_bytes: file size (None with ``sha256``).
        license: the license the file is published under.
        source: repository (or recipe) the file comes from.
        num_params: learnable parameters used at inference.
        metrics: measured scores, ``{"lol_eval15": {"psnr": ..., "ssim": ...}}``.
        note: one line on what it is or how to obtain it.
        bundled: shipped inside the package (``vidlight/assets/<file name>``).
        manual: pages (Google Drive, BaiduNetdisk) from which a person fetches the file when
            there is no scriptable ``url``; the error for a missing file names them.
        directory: ``relpath`` is a directory (e.g. KinD's ``checkpoint/`` of TF1 checkpoints).
    """

    name: str
    model: str
    relpath: str
    sha256: str | None
    size_bytes: int | None
    license: str
    source: str
    num_params: int
    url: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    note: str = ""
    bundled: bool = False
    manual: tuple[str, ...] = ()
    directory: bool = False

    @property
    def file_name(self) -> str:
        return Path(self.relpath).name


_CATALOGUE: dict[str, Weights] = {}


def register_weights(record: Weights) -> Weights:
    if record.name in _CATALOGUE:
        raise RuntimeError(f"weights {record.name!r} are registered twice")
    _CATALOGUE[record.name] = record
    return record


def list_weights(model: str | None = None) -> list[Weights]:
    """Catalogue records, optionally only those of one model."""
    return [w for w in _CATALOGUE.values() if model is None or w.model == model]


def get_weights(name: str) -> Weights:
    try:
        return _CATALOGUE[name]
    except KeyError:
        raise WeightsError(f"unknown weights {name!r}; catalogue names: {', '.join(sorted(_CATALOGUE))}") from None


def cache_dir() -> Path:
    env = os.environ.get("VIDLIGHT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vidlight"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _candidates(record: Weights) -> list[Path]:
    paths = []
    env = os.environ.get("VIDLIGHT_WEIGHTS_DIR")
    if env:
        paths += [Path(env) / record.relpath, Path(env) / record.file_name]
    if record.bundled:
        paths.append(ASSETS_DIR / record.file_name)
    paths.append(cache_dir() / "weights" / record.relpath)
    return paths


def find_local(record: Weights) -> Path | None:
    """The first existing local copy of ``record``, or None."""
    exists = Path.is_dir if record.directory else Path.is_file
    return next((p for p in _candidates(record) if exists(p)), None)


def download(url: str, dest: Path, *, sha256: str, progress: bool = True, timeout_seconds: float = 30) -> Path:
    """Download ``url`` to ``dest`` through ``dest.tmp``, verifying its sha256.

    The destination only ever appears complete and verified.
    """
    from tqdm.auto import tqdm

    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # nearest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")

    def clean_up() -> None:
        """A failed download leaves nothing behind: no partial file, no folder made for it."""
        tmp.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break

    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as exc:
        clean_up()
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"could not download {url}: {reason}") from None
    if digest.hexdigest() != sha256:
        clean_up()
        raise WeightsError(
            f"download of {url} has sha256 {digest.hexdigest()}, expected {sha256}: "
            "the file is corrupt or has changed upstream"
        )
    os.replace(tmp, dest)
    return dest


def resolve(name: str, *, allow_download: bool | None = None, progress: bool = True) -> Path:
    """Local path of catalogue weights ``name``, downloading them if needed and allowed."""
    record = get_weights(name)
    local = find_local(record)
    if local is not None:
        return local
    if allow_download is None:
        allow_download = os.environ.get("VIDLIGHT_OFFLINE", "") in ("", "0")
    target = cache_dir() / "weights" / record.relpath
    where = f"put {record.file_name} at $VIDLIGHT_WEIGHTS_DIR/{record.relpath} or {target}"
    if record.url is None and record.manual:
        raise WeightsError(
            f"weights {name!r} cannot be downloaded by vidlight ({record.note}): fetch it by hand from "
            f"{' or '.join(record.manual)}, then put it at $VIDLIGHT_WEIGHTS_DIR/{record.relpath} or {target}"
        )
    if record.url is None or record.sha256 is None:
        raise WeightsError(f"weights {name!r} are not available here: {record.note}; {where}")
    if not allow_download:
        raise WeightsError(f"weights {name!r} are not available offline: download {record.url} and {where}")
    try:
        return download(record.url, target, sha256=record.sha256, progress=progress)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; to use a copy fetched by hand, {where}") from None


_HDF5_SUFFIXES = (".h5", ".hdf5")


def _read_keras_hdf5(path: Path) -> dict[str, torch.Tensor]:
    """Weights of a Keras 2 HDF5 file (``save_weights`` or a whole-model ``save``), keyed by
    ``<layer name>/<weight name>`` (e.g. ``conv2d_1/conv2d_1/kernel:0``): looked up by name,
    whatever the order of the layers in the file."""
    try:
        import h5py
    except ImportError:
        raise WeightsError(f"reading {path} needs h5py (pip install h5py)") from None
    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise WeightsError(f"weights file {path} is HDF5 but not a Keras weights file (no layer_names)")
        tensors = {}
        for layer in root.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else str(layer)
            group = root[layer]
            for weight in group.attrs.get("weight_names", []):
                weight = weight.decode() if isinstance(weight, bytes) else str(weight)
                tensors[f"{layer}/{weight}"] = torch.from_numpy(np.array(group[weight]))
        return tensors


def _is_tf1_checkpoint(path: Path) -> bool:
    """Whether ``path`` names a TF1 checkpoint: a directory with a ``checkpoint`` or ``*.index``
    file, an ``.index`` file, or a prefix with an ``.index`` file beside it."""
    if path.is_dir():
        return (path / "checkpoint").is_file() or any(path.glob("*.index"))
    return path.suffix == ".index" or Path(f"{path}.index").is_file()


def _read_checkpoint_dirs(path: Path) -> dict[str, torch.Tensor]:
    """Merged tensors of the TF1 checkpoint directories directly inside ``path``."""
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and _is_tf1_checkpoint(p))
    if not subdirs:
        raise WeightsError(
            f"directory {path} is not a TensorFlow checkpoint and holds none "
            "(no checkpoint or *.index file in it or its subdirectories)"
        )
    merged: dict[str, torch.Tensor] = {}
    owner: dict[str, Path] = {}
    for sub in subdirs:
        for key, value in read_checkpoint(sub).items():
            if key in merged:
                raise WeightsError(f"tensor {key!r} is in both {owner[key]} and {sub}: cannot merge them")
            merged[key], owner[key] = value, sub
    return merged


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a PyTorch state dict (``.pt``/``.pth``, loaded with
    ``weights_only=True``), a Keras 2 HDF5 weights file (``.h5``, keyed by layer and weight
    name, in the official layout), an ``.npz`` of arrays keyed by tensor name, or a
    TensorFlow 1.x ``tf.train.Saver`` checkpoint (its directory, prefix or ``.index`` file,
    keyed by variable name). A directory whose subdirectories are TF1 checkpoints (a method
    with one checkpoint per sub-network, e.g. KinD's ``checkpoint/``) gives all their
    tensors merged; their variable names must not collide."""
    path = Path(path)
    if _is_tf1_checkpoint(path):
        from vidlight.tf1_checkpoint import read_tf1_checkpoint

        return {k: torch.from_numpy(v) for k, v in read_tf1_checkpoint(path).items()}
    if path.is_dir():
        return _read_checkpoint_dirs(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        if path.suffix in _HDF5_SUFFIXES:
            return _read_keras_hdf5(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception:  # torch, numpy and h5py raise many types for a bad file
        raise WeightsError(
            f"cannot read weights file {path}: it is not a PyTorch checkpoint, Keras .h5 or .npz "
            "(corrupt or truncated?)"
        ) from None
    for wrapper in ("state_dict", "model", "params"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(weights: str | os.PathLike, *, model: str) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors for ``model`` from a catalogue name or a file path, and a label for errors."""
    text = os.fspath(weights)
    if text in _CATALOGUE:
        record = _CATALOGUE[text]
        if record.model != model:
            raise WeightsError(f"weights {text!r} belong to model {record.model!r}, not {model!r}")
        path = resolve(text)
        return read_checkpoint(path), f"weights {text!r} ({path})"
    suffixes = (".pt", ".pth", ".npz", ".pkl", ".index", ".ckpt", *_HDF5_SUFFIXES)
    if os.path.sep in text or Path(text).suffix in suffixes or Path(text).exists():
        return read_checkpoint(text), f"weights file {text}"
    names = ", ".join(w.name for w in list_weights(model)) or "none"
    raise WeightsError(f"unknown weights {text!r} for model {model!r}; use one of: {names}, or a checkpoint path")
