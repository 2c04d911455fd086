"""Model zoo: small CNNs for the offline datasets, built the same short way through one registry."""

from tessera.models import imagenet as _imagenet  # noqa: F401  (explicit: these modules register their entries)
from tessera.models import zoo as _zoo  # noqa: F401
from tessera.models.registry import create_model, list_models, load_model, register_model, save_model

__all__ = ["create_model", "list_models", "load_model", "register_model", "save_model"]
