"""The layer catalogue: importing this package registers every built-in layer type.

One module per family (vision, neuron, common, loss, normalization, recurrent, data, python_layer, ...);
every module in this package is imported, so adding a family needs no edit here.
"""
import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
