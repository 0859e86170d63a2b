"""vidlight: low-light enhancement for video, with faithful ports of published methods.

>>> import vidlight
>>> vidlight.enhance_video("dark.mp4", "bright.mp4", model="sci")
>>> for frame in vidlight.enhanced_frames("rtsp://camera/stream"):  # a detector's input
...     detect(frame.image, frame.pts_seconds)
>>> model = vidlight.load_model("zero-dce++", scale_factor=12)
>>> enhanced = model(batch)  # N x 3 x H x W float RGB in [0, 1] -> same shape
"""

from importlib import metadata as _metadata

from vidlight.allocator import keep_freed_memory
from vidlight.errors import MediaError, VidlightError, WeightsError
from vidlight.models import list_models, load_model
from vidlight.pipeline.iterate import EnhancedFrame, enhanced_frames
from vidlight.pipeline.runner import Interrupted, RunStats, enhance_video
from vidlight.settings import Settings
from vidlight.weights import Weights, list_weights

__all__ = [
    "EnhancedFrame",
    "Interrupted",
    "MediaError",
    "RunStats",
    "Settings",
    "VidlightError",
    "Weights",
    "WeightsError",
    "enhance_video",
    "enhanced_frames",
    "keep_freed_memory",
    "list_models",
    "list_weights",
    "load_model",
]
try:  # the version is written once, in pyproject.toml
    __version__ = _metadata.version("vidlight")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
