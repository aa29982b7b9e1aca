"""The model layer: registry of specs, labels, weights, network building."""

from streamclf.models.labels import kinetics400_labels, load_classmap
from streamclf.models.loader import LoadedModel, load_model
from streamclf.models.registry import MODEL_ZOO, ModelSpec, get_spec, list_models

__all__ = [
    "MODEL_ZOO",
    "LoadedModel",
    "ModelSpec",
    "get_spec",
    "kinetics400_labels",
    "list_models",
    "load_classmap",
    "load_model",
]
