"""vidlight: low-light enhancement for video, with faithful ports of published methods."""

from vidlight.errors import MediaError, VidlightError, WeightsError
from vidlight.models import list_models, load_model

__all__ = ["MediaError", "VidlightError", "WeightsError", "list_models", "load_model"]
__version__ = "0.1.0"
