"""What the pipeline may ask of a model beyond ``forward``: the optional attributes a model
class declares, and their defaults when it does not.

A model is an ``nn.Module`` mapping ``N x 3 x H x W`` RGB in [0, 1] to the same shape. These
class attributes tell the pipeline how to run it well; none is required.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModelHooks:
    """A model's declared attributes, defaults filled in."""

    receptive_halo: int | None = None
    """Rows of context each output row needs (a purely local model): the CPU path then runs row
    strips in parallel. None: the model needs the whole frame (a global model)."""

    clip_context: int = 0
    """A clip model (mbllen-video) treats a batch as consecutive frames and needs this many
    earlier frames as context; 0 for frame-wise models."""

    fp16_default: bool = True
    """Whether the model runs in fp16 on CUDA unless told otherwise (LLFlow's flow is not
    accurate enough in fp16)."""

    averages_statistics: bool = False
    """The model normalises each frame by its own statistics (MBLLEN, KinD: it has a
    ``statistics_smoother`` slot), and the pipeline averages them over time instead."""

    tile_multiple: int = 1
    """Tile sides and offsets must be multiples of this (the model pools or downsamples)."""

    peak_bytes_per_pixel: int | None = None
    """Peak device memory per input pixel of a forward, for choosing tiles; None: not known,
    so ``--tile auto`` never tiles it."""


def hooks_of(model: nn.Module) -> ModelHooks:
    """The hooks ``model`` declares, with the defaults for those it does not."""
    defaults = ModelHooks()
    clip = getattr(model, "clip_context", defaults.clip_context)
    return ModelHooks(
        receptive_halo=getattr(model, "receptive_halo", defaults.receptive_halo),
        clip_context=clip,
        fp16_default=getattr(model, "fp16_default", defaults.fp16_default),
        # A clip model's context frames would count twice in an average over time.
        averages_statistics=hasattr(model, "statistics_smoother") and not clip,
        tile_multiple=getattr(model, "tile_multiple", defaults.tile_multiple),
        peak_bytes_per_pixel=getattr(model, "peak_bytes_per_pixel", defaults.peak_bytes_per_pixel),
    )
