"""vidlight: low-light enhancement for video, with faithful ports of published methods.

    >>> import vidlight
    >>> vidlight.enhance_video("dark.mp4", "bright.mp4", model="sci")
    >>> model = vidlight.load_model("zero-dce++", scale_factor=12)
    >>> enhanced = model(batch)  # N x 3 x H x W float RGB in [0, 1] -> same shape
"""

from vidlight.errors import MediaError, VidlightError, WeightsError
from vidlight.models import list_models, load_model
from vidlight.pipeline.runner import Interrupted, RunStats, enhance_video
from vidlight.weights import Weights, list_weights

__all__ = [
    "Interrupted",
    "MediaError",
    "RunStats",
    "VidlightError",
    "Weights",
    "WeightsError",
    "enhance_video",
    "list_models",
    "list_weights",
    "load_model",
]
__version__ = "0.1.0"
