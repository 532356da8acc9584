"""brewnet's error types.

Every failure a user can cause (a bad prototxt, a missing file, a shape that does not fit) raises one of these,
with a message that names the file (and line:col), the layer, the blob or the value at fault.  Library code
never uses `assert`, a bare Exception or sys.exit for user input.
"""


class BrewnetError(Exception):
    """Base of every brewnet error."""


class ProtoError(BrewnetError):
    """A prototxt / binary proto file that cannot be read or written."""

    def __init__(self, message, path=None, line=None, column=None):
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}" + (f":{column}" if column is not None else "")
            where += ": "
        super().__init__(where + message)
        self.path, self.line, self.column = path, line, column


class LayerError(BrewnetError):
    """A layer that cannot be set up or run, named by layer name and type."""

    def __init__(self, message, layer_name=None, layer_type=None):
        prefix = ""
        if layer_name is not None or layer_type is not None:
            prefix = f"layer '{layer_name}' (type {layer_type}): "
        super().__init__(prefix + message)
        self.layer_name, self.layer_type = layer_name, layer_type


class UnknownLayerTypeError(LayerError):
    """A `type:` that no registered layer answers to."""


class NetError(BrewnetError):
    """A net that cannot be assembled: missing bottoms, duplicate tops, bad sharing."""


class WeightsError(BrewnetError):
    """Weights (caffemodel / HDF5) that do not fit the net or cannot be read."""


class SolverError(BrewnetError):
    """A solver definition or a training run that cannot go on."""


class DataError(BrewnetError):
    """Data sources: databases, image lists, HDF5 lists, mean files."""


class DataValueError(DataError, ValueError):
    """A value that pycaffe rejects with ValueError (an array of the wrong shape, a BlobProto without a shape,
    a mean whose channels do not fit): scripts written for Caffe catch it as ValueError."""


class DenseCRFError(BrewnetError, ValueError):
    """Inputs that dense CRF inference or the permutohedral lattice cannot take (unary and image shapes that do
    not fit, an image without 3 channels, bad thetas, features or values of the wrong shape); a ValueError too."""


def expect(condition, message, layer=None):
    """Raise LayerError(message) naming `layer` unless `condition` holds: Caffe's CHECK, as a user error."""
    if not condition:
        if layer is not None:
            raise LayerError(message, layer.name, layer.type)
        raise BrewnetError(message)
