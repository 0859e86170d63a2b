"""Enhancement methods. Importing this package registers every model and its weights."""

from vidlight.models import enlightengan, kind, kind_plus, llflow, mbllen, mbllen_video, sci, zero_dce  # noqa: F401  (registration)
from vidlight.models.registry import KeyMap, get_model_spec, list_models, load_model, register_model

__all__ = ["KeyMap", "get_model_spec", "list_models", "load_model", "register_model"]
