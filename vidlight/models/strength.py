"""Strength: how much of a method's enhancement a frame gets, from 0 (the input, unchanged) to 1
(the method's official output, bit for bit).

Each method defines strength in its own terms, as two steps: ``strength_terms(x)`` computes
what the method estimates from the frame (the quantities its strength acts on), and
``apply_strength(x, terms, s)`` turns the frame into the output at strength ``s``. Both are
cheap to separate because the expensive part, the network, is in the first step: the
exposure control (:mod:`vidlight.pipeline.exposure`) renders a small preview of a frame at many
strengths from one set of terms.

* **Retinex-style methods** act on the estimated illumination.
  SCI divides the frame by its illumination ``L``; strength ``s`` divides it by ``L ** s``.
  KinD and KinD++ brighten the illumination they estimate and restore the reflectance; strength
  raises their illumination gain to ``s`` and fades their restored reflectance in by ``s``.
* **Curve methods** (Zero-DCE, Zero-DCE++) act on the curve parameters: every curve map is
  multiplied by ``s``, so ``s = 0`` is the identity curve ``LE(x) = x``.
* **End-to-end networks** (MBLLEN, mbllen-video, EnlightenGAN, LLFlow) have no such inner
  quantity, so their output is blended with the input by :func:`blend` (see there for which
  blend and why).

A model without ``strength_terms`` is an end-to-end network: its terms are its output.
``s`` is one value per frame (an N-element tensor) or one for the batch (a float).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

# BT.601 luma, as the pipeline's brightness measurements (vidlight.video_metrics).
LUMA = (0.299, 0.587, 0.114)

Phases = tuple[Callable, Callable, Callable]


def per_frame(strength: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``strength`` as an N x 1 x 1 x 1 tensor of ``like``'s dtype and device."""
    s = torch.as_tensor(strength, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(like.shape[0])
    if s.shape != (like.shape[0],):
        raise ValueError(f"strength needs one value per frame ({like.shape[0]}), got shape {tuple(s.shape)}")
    return s.view(-1, 1, 1, 1)


def blend(x: torch.Tensor, y: torch.Tensor, strength: float | torch.Tensor) -> torch.Tensor:
    """An end-to-end network's output ``y`` at ``strength`` of the way from the input ``x``:
    ``(1 - s) x + s y``, per pixel and channel.

    Why a plain mix of the two pictures, in the video's own (gamma-encoded) values: both are
    the same scene, aligned pixel for pixel, so the mix has no ghosts, and it keeps the
    network's colour and contrast in proportion to ``s`` rather than inventing a third
    rendering. A gain-matched mix (the input brightened by a smooth gain map before mixing)
    was measured against it on the exposure ladder of ``benchmarks/exposure.py`` and did
    worse. At ``s = 1`` the result is ``y`` bit for bit (``0 * x`` adds nothing), at ``s = 0``
    it is ``x``.
    """
    s = per_frame(strength, x)
    return (1 - s) * x + s * y


def strength_phases(model: nn.Module) -> Phases:
    """``(prepare, body, finish)`` computing ``model``'s strength terms, for tiles as
    :func:`vidlight.pipeline.tiling.phases` computes its output: a model may split its terms
    into a global prepare, a local body run on tiles and a global finish
    (``strength_tile_prepare`` / ``strength_tile_body`` / ``strength_tile_finish``); one that
    has ``strength_terms`` only is one body; an end-to-end network's terms are its output,
    computed in its own tile phases."""
    from vidlight.pipeline.tiling import phases

    if not hasattr(model, "strength_terms"):
        return phases(model)
    prepare = getattr(model, "strength_tile_prepare", None) or (lambda x: (x, None))
    body = getattr(model, "strength_tile_body", None) or cast(Callable, model.strength_terms)
    finish = getattr(model, "strength_tile_finish", None) or (lambda y, ctx: y)
    return prepare, body, finish


def terms_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What ``model`` estimates from ``x`` that its strength acts on (its output for an
    end-to-end network)."""
    terms = getattr(model, "strength_terms", None)
    return terms(x) if terms is not None else model(x)


def apply_strength(
    model: nn.Module, x: torch.Tensor, terms: torch.Tensor, strength: float | torch.Tensor
) -> torch.Tensor:
    """``model``'s output for ``x`` at ``strength`` (0: ``x``; 1: the official output), from
    the ``terms`` that :func:`terms_of` computed."""
    apply = getattr(model, "apply_strength", None)
    if apply is not None:
        return apply(x, terms, strength)
    return blend(x, terms, strength)


def renders(model: nn.Module, x: torch.Tensor, terms: torch.Tensor, grid: Sequence[float]) -> torch.Tensor:
    """``model``'s output for ``x`` at every strength of ``grid``, G x N x C x H x W, from one set
    of ``terms``: the model's ``strength_renders`` where it has one and it gives a result (a
    model whose strength has a part common to every strength computes it once there; None
    from it: not for these tensors), else :func:`apply_strength` on the batch repeated once
    per grid strength (one call, not one per strength)."""
    hook = getattr(model, "strength_renders", None)
    rendered = hook(x, terms, grid) if hook is not None else None
    if rendered is not None:
        return rendered
    g, n = len(grid), x.shape[0]
    strengths = torch.tensor(list(grid), dtype=x.dtype, device=x.device).repeat_interleave(n)
    repeat = (g,) + (1,) * (x.ndim - 1)
    out = apply_strength(model, x.repeat(repeat), terms.repeat(repeat), strengths)
    return out.view(g, n, *out.shape[1:])


def enhance(model: nn.Module, x: torch.Tensor, strength: float | torch.Tensor | None = None) -> torch.Tensor:
    """``model(x)`` at ``strength``; ``None`` or 1 runs the official forward as it is."""
    if strength is None or (not torch.is_tensor(strength) and float(strength) == 1.0):
        return model(x)
    return apply_strength(model, x, terms_of(model, x), strength)
