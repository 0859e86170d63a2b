"""Model registry: methods register themselves by name; users look them up by string."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from vidlight.errors import VidlightError, WeightsError


@dataclass(frozen=True)
class KeyMap:
    """Renames official checkpoint tensors to ours by prefix (official -> ours)."""

    prefixes: Mapping[str, str] = field(default_factory=dict)

    def convert(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.prefixes:
            return dict(state)
        out = {}
        for key, value in state.items():
            for official, ours in self.prefixes.items():
                if key.startswith(official):
                    out[ours + key[len(official) :]] = value
                    break
        return out

    def official_name(self, ours: str) -> str:
        for official, mine in self.prefixes.items():
            if ours.startswith(mine):
                return official + ours[len(mine) :]
        return ours


# Converts tensors from the official layout to ours, keyed by the official names (e.g. Keras
# conv kernels (kh, kw, in, out) -> torch (out, in, kh, kw)). Applied before the KeyMap renames;
# tensors it does not recognise must pass through unchanged.
StateTransform = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    default_weights: str | None
    keymap: KeyMap
    summary: str
    options: Mapping[str, str]
    transform: StateTransform | None = None

    def option_defaults(self) -> dict[str, object]:
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items()}


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    default_weights: str | None,
    summary: str,
    keymap: KeyMap | None = None,
    options: Mapping[str, str] | None = None,
    transform: StateTransform | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model builder under ``name`` (a duplicate name is an error).

    Args:
        name: the name users pass to :func:`load_model` and ``--model``.
        default_weights: catalogue name of the weights used when none are given; None when
            the model has no complete public checkpoint (``load_model`` then needs ``weights=``).
        summary: one line for ``vidlight models``.
        keymap: how official checkpoint tensor names map to ours.
        options: keyword options of the builder, with help text.
        transform: converts official tensor layouts to ours (official names in and out),
            applied before ``keymap`` renames; None when the layouts already agree.
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        _MODELS[name] = ModelSpec(
            name, builder, default_weights, keymap or KeyMap(), summary, dict(options or {}), transform
        )
        return builder

    return decorate


def boolean_option(value: object, name: str) -> bool:
    """A model option that is on or off: a bool, or 0/1 (``-o postprocess=true`` arrives as a
    bool: the CLI and TOML read option values as TOML does)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise VidlightError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def load_state_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    keymap: KeyMap,
    origin: str,
    transform: StateTransform | None = None,
) -> None:
    """Load ``state`` (official or our naming) into ``model``, naming the first bad tensor.

    ``transform`` (official layout -> ours) runs on the official tensors before renaming; a
    state already in our own naming is loaded as it is.
    """
    official_state = transform(state) if transform is not None else dict(state)
    converted = keymap.convert(official_state)
    expected = model.state_dict()
    if not any(k in converted for k in expected):
        converted = dict(state)  # already in our own naming
    for key, target in expected.items():
        official = keymap.official_name(key)
        if key not in converted:
            raise WeightsError(f"{origin} has no tensor {official!r}: it is not a checkpoint for this model")
        value = torch.as_tensor(converted[key])
        if tuple(value.shape) != tuple(target.shape):
            stored = state.get(official)
            if stored is not None and tuple(stored.shape) != tuple(value.shape):
                shapes = (
                    f"has shape {tuple(stored.shape)} (in our layout {tuple(value.shape)}), "
                    f"expected {tuple(target.shape)} in our layout"
                )
            else:
                shapes = f"has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
            raise WeightsError(f"{origin}: tensor {official!r} {shapes}: it is not a checkpoint for this model")
        converted[key] = _flush_subnormals(value.to(target.dtype))
    model.load_state_dict({k: converted[k] for k in expected})


def _flush_subnormals(value: torch.Tensor) -> torch.Tensor:
    """``value`` with subnormal floats (below the smallest normal number, ~1e-38 in fp32) set to 0.

    Some official checkpoints hold them (Zero-DCE's has 2,048 weights near 1e-44): on a CPU every
    multiplication by one takes a slow microcode path, which made Zero-DCE's forward 17 s instead of
    0.5 s per 600 x 400 frame here. Their products are below 1e-38, so the outputs do not change.
    """
    if not value.is_floating_point():
        return value
    tiny = torch.finfo(value.dtype).tiny
    return torch.where(value.abs() < tiny, torch.zeros_like(value), value)


def load_model(
    name: str,
    *,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    **options: object,
) -> nn.Module:
    """Build a registered model with its weights, in eval mode, on ``device``.

    Args:
        name: a name from :func:`list_models`, e.g. ``"sci"``.
        weights: ``None`` for the model's default, a catalogue name (``"sci-medium"``),
            a path to an official checkpoint (PyTorch ``.pt``/``.pth`` or Keras ``.h5``),
            or a path to an ``.npz`` keyed by the official tensor names.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...).
        **options: model options (see ``vidlight models``), e.g. ``scale_factor=12``.

    Returns:
        The model. ``model(x)`` maps an N x 3 x H x W float RGB batch in [0, 1] to the
        enhanced batch of the same shape; ``model.weights_name`` names the weights it holds.
    """
    from vidlight.weights import load_state  # weights imports the registry's users

    spec = get_model_spec(name)
    unknown = sorted(set(options) - set(spec.option_defaults()))
    if unknown:
        valid = ", ".join(spec.option_defaults()) or "none"
        raise VidlightError(f"model {name!r} has no option {unknown[0]!r}; its options: {valid}")
    try:
        model = spec.builder(**options)
    except (TypeError, ValueError) as exc:
        raise VidlightError(f"model {name!r}: {exc}") from None
    source = weights or spec.default_weights
    if not source:
        raise WeightsError(f"model {name!r} has no default weights; pass weights=<checkpoint path>")
    state, origin = load_state(source, model=name)
    load_state_into(model, state, spec.keymap, origin, spec.transform)
    setattr(model, "weights_name", source)  # noqa: B010  (a plain attribute: nn.Module's typing allows modules only)
    return model.eval().requires_grad_(False).to(device)
