"""caffe.net_spec: write nets in Python (pycaffe's NetSpec, `layers as L`, `params as P`, `to_proto`).

    n = caffe.NetSpec()
    n.data, n.label = L.Data(source='train_lmdb', backend=P.Data.LMDB, batch_size=64, ntop=2,
                             transform_param=dict(scale=1. / 255))
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    print(n.to_proto())

`L.<Type>(*bottoms, **kwargs)` records a layer; the result is its top (a tuple of tops for ntop > 1, the layer
itself for ntop=0).  Keyword arguments land in the layer's own `<type>_param` message when that message has
the field (num_output, kernel_size, ...), otherwise on the LayerParameter (loss_weight, include, ...); names
ending in `param` (transform_param, param, ...) always go on the LayerParameter.  Dicts become messages,
lists become repeated fields, a single value given for a repeated field becomes a one-element list.

Naming, as pycaffe's: a top assigned to the NetSpec gets the attribute's name; any other top gets
`<Type><k>`, k counting per type in the order the layers are reached; a layer is named after its first top
(`<Type><k>` for a layer without tops); an in-place layer's tops are its bottoms.  The printed text is
protobuf's text format, fields in field-number order, which is what Caffe prints too.
"""
import collections

from ..proto import caffe_pb2

# Layer types whose parameter message is not named after the type.
_SHARED_PARAM = {"Deconvolution": "convolution"}


def param_name_dict():
    """{'Convolution': 'convolution', 'InnerProduct': 'inner_product', ...}: layer type -> its *_param field."""
    names = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                names[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return names


_param_names = param_name_dict()


def _is_repeated(proto, name):
    return hasattr(getattr(proto, name), "extend")      # repeated containers, scalar or message


def assign_proto(proto, name, val):
    """Set field `name` of message `proto` from a Python value (dict -> message, list -> repeated field)."""
    if name not in proto.DESCRIPTOR.fields_by_name:
        raise AttributeError(f"{proto.DESCRIPTOR.name} has no field '{name}'")
    repeated = _is_repeated(proto, name)
    if repeated and not isinstance(val, (list, tuple)):
        val = [val]
    if isinstance(val, (list, tuple)):
        if not repeated:
            raise TypeError(f"{proto.DESCRIPTOR.name}.{name} is not a repeated field, got a list {val!r}")
        field = getattr(proto, name)
        for item in val:
            if isinstance(item, dict):
                message = field.add()
                for key, value in item.items():
                    assign_proto(message, key, value)
            else:
                field.append(item)
    elif isinstance(val, dict):
        message = getattr(proto, name)
        for key, value in val.items():
            assign_proto(message, key, value)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer (the n-th top of Function `fn`)."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """A layer: its type, its bottoms (Tops) and its keyword parameters."""

    def __init__(self, type_name, inputs, params):
        for index, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                # pycaffe's words, which scripts and BVLC's tests match: "(type is <class 'tuple'>)"
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(bottom)})")
        self.type_name = type_name
        self.inputs = tuple(inputs)
        params = dict(params)
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        self.params = params
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    @staticmethod
    def _autoname(type_name, autonames):
        autonames[type_name] += 1
        return f"{type_name}{autonames[type_name]}"

    def _top_name(self, top, names, autonames):
        if top not in names:
            names[top] = self._autoname(top.fn.type_name, autonames)
        return names[top]

    def _name(self, names, autonames):
        if self not in names:
            names[self] = (self._top_name(self.tops[0], names, autonames) if self.ntop > 0
                           else self._autoname(self.type_name, autonames))
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:           # producers first: their names are drawn before ours
            bottom._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        for key, value in self.params.items():
            self._assign(layer, key, value)
        layers[self] = layer

    def _assign(self, layer, key, value):
        field = None if key.endswith("param") else \
            (_SHARED_PARAM.get(self.type_name) or _param_names.get(self.type_name))
        if field is not None:
            message = getattr(layer, field + "_param")
            if key in message.DESCRIPTOR.fields_by_name:
                assign_proto(message, key, value)
                return
        try:
            assign_proto(layer, key, value)
        except AttributeError:
            where = f" or of {field}_param" if field else ""
            raise AttributeError(f"{self.type_name} layer: '{key}' is not a field of LayerParameter{where}") \
                from None


def to_proto(*tops):
    """A NetParameter with all layers needed to compute the given tops (names generated)."""
    layers = collections.OrderedDict()
    autonames = collections.Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class NetSpec:
    """Assign tops as attributes (or items) to name them; to_proto() gives the NetParameter."""

    def __init__(self):
        super().__setattr__("tops", collections.OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        tops = self.__dict__.get("tops")
        if tops is None or name not in tops:
            raise AttributeError(f"NetSpec has no top named '{name}'")
        return tops[name]

    def __setitem__(self, key, value):
        self.tops[key] = value

    def __getitem__(self, key):
        return self.tops[key]

    def __delattr__(self, name):
        del self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self):
        return self.tops.keys()

    def to_proto(self):
        names = {top: name for name, top in self.tops.items()}
        autonames = collections.Counter()
        layers = collections.OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


class Layers:
    """`L.Convolution(bottom, kernel_size=3)`: any attribute is a layer type."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        layer_fn.__name__ = type_name
        return layer_fn


class _ParamConstants:
    def __init__(self, type_name):
        self._type_name = type_name

    def __getattr__(self, name):
        message = getattr(caffe_pb2, self._type_name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe_pb2 has no message {self._type_name}Parameter")
        try:
            return getattr(message, name)
        except AttributeError:
            raise AttributeError(f"{self._type_name}Parameter has no constant '{name}'") from None


class Parameters:
    """`P.Pooling.MAX`, `P.Data.LMDB`: the enum constants of <Type>Parameter."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        return _ParamConstants(type_name)


layers = Layers()
params = Parameters()
