"""LayerRegistry: Caffe type string -> layer class (book 5.3).

Layer modules register their classes with `@register_layer("Type")`; the Net asks `create_layer(param)`.
An unknown type is a user error that lists the closest known names.
"""
import difflib

from ..errors import UnknownLayerTypeError

_registry = {}


def register_layer(type_name):
    def decorate(cls):
        if type_name in _registry and _registry[type_name] is not cls:
            raise ValueError(f"layer type '{type_name}' registered twice "
                             f"({_registry[type_name].__name__} and {cls.__name__})")
        cls.type = type_name
        _registry[type_name] = cls
        return cls
    return decorate


def _load_catalogue():
    # Importing brewnet.layers registers every built-in layer; done lazily to avoid import cycles.
    from .. import layers  # noqa: F401


def layer_class(type_name, layer_name=None):
    _load_catalogue()
    try:
        return _registry[type_name]
    except KeyError:
        close = difflib.get_close_matches(type_name, _registry, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownLayerTypeError(
            f"unknown layer type '{type_name}'{hint} Known types: {', '.join(sorted(_registry))}",
            layer_name, type_name) from None


def create_layer(param):
    """Instantiate the layer a LayerParameter asks for (Caffe's LayerRegistry::CreateLayer)."""
    return layer_class(param.type, param.name)(param)


def layer_type_list():
    _load_catalogue()
    return sorted(_registry)
