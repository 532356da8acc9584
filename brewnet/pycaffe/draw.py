"""caffe.draw: a picture of a NetParameter, drawn by Graphviz (pycaffe's draw.py; pydot only for get_pydot_graph).

Layers are boxes (coloured by type: convolution red, pooling orange, inner product purple, in-place neuron
layers green, others blue), blobs are grey octagons, and the edges run bottom blob -> layer -> top blob,
labelled with the batch size, num_output or nothing, as in Caffe's drawings.  `get_dot_source` gives the DOT
text; `draw_net` runs Graphviz's `dot` on it (it must be on PATH: `apt-get install graphviz`) for any output
format dot knows (png, svg, pdf, ...); the format `raw` (or `dot`) returns the DOT text itself.
`get_pydot_graph` parses the same text into the pydot.Dot that pycaffe returns (it needs the `pydot` package).

The phase filter is Caffe's: a layer is drawn when its include rules name the phase (or it has none) and
no exclude rule does; a rule without a phase matches every phase.
"""
import os
import shutil
import subprocess

from ..errors import BrewnetError
from ..proto import caffe_pb2


class DrawError(BrewnetError, ValueError):
    """A layer that cannot be drawn as asked; a ValueError too, as pycaffe's draw raises."""

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
           "InnerProduct": "#CC33FF"}
_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")


def get_pooling_types_dict():
    """{0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}"""
    return {v.number: name for name, v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def choose_color_by_layertype(layertype):
    return _COLORS.get(layertype, LAYER_STYLE_DEFAULT["fillcolor"])


def get_edge_label(layer):
    """What the edges out of a layer say: 'Batch 64' for Data, num_output for conv/ip, else nothing."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def get_layer_lr_mult(layer):
    """(weights, bias) lr_mult of a Convolution / Deconvolution / InnerProduct layer (1 when not given)."""
    if layer.type not in _LEARNING_TYPES:
        raise DrawError(f"{layer.type} layers do not have a learning rate multiplier")
    if len(layer.param) > 2:
        raise DrawError(f"layer '{layer.name}': could not parse the learning rate multiplier "
                           f"({len(layer.param)} param blocks)")
    mults = [p.lr_mult for p in layer.param] + [1.0] * (2 - len(layer.param))
    return tuple(mults)


def get_layer_label(layer, rankdir, display_lrm=False):
    """Name, (type), kernel/stride/pad for spatial layers and optionally the lr_mults; words stacked
    vertically in a left-right drawing, side by side in a top-bottom one."""
    separator = " " if rankdir in ("TB", "BT") else "\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append(f"({layer.type} {get_pooling_types_dict()[layer.pooling_param.pool]})")
    else:
        parts.append(f"({layer.type})")
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        weights, bias = get_layer_lr_mult(layer)
        if weights or bias:
            parts.append(f"lr mult: {weights:.1f}, {bias:.1f}")
    return separator.join(parts)


def _in_phase(layer, phase):
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise DrawError(f"layer '{layer.name}' has both include and exclude specified")
    if len(layer.include):
        return any(not r.HasField("phase") or r.phase == phase for r in layer.include)
    return not any(not r.HasField("phase") or r.phase == phase for r in layer.exclude)


def _quote(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(style, **extra):
    items = dict(style, **extra)
    return "[" + ", ".join(f"{k}={_quote(str(v))}" for k, v in items.items()) + "]"


def get_dot_source(caffe_net, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    """The DOT text of the drawing of NetParameter `caffe_net`."""
    nodes, edges = {}, []
    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        node = f"{layer.name}_{layer.type}"
        label = get_layer_label(layer, rankdir, display_lrm)
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        style = NEURON_LAYER_STYLE if in_place else dict(LAYER_STYLE_DEFAULT,
                                                          fillcolor=choose_color_by_layertype(layer.type))
        nodes[node] = _attrs(style, label=label)
        for bottom in layer.bottom:
            nodes.setdefault(bottom + "_blob", _attrs(BLOB_STYLE, label=bottom))
            edges.append((bottom + "_blob", node, ""))
        for top in layer.top:
            nodes.setdefault(top + "_blob", _attrs(BLOB_STYLE, label=top))
            edges.append((node, top + "_blob", get_edge_label(layer) if label_edges else ""))
    lines = [f"digraph {_quote(caffe_net.name or 'Net')} {{", f"  rankdir={rankdir};"]
    lines += [f"  {_quote(name)} {attrs};" for name, attrs in nodes.items()]
    lines += [f"  {_quote(src)} -> {_quote(dst)} [label={_quote(label)}];" for src, dst, label in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The drawing as a pydot.Dot, as pycaffe returns it (scripts add nodes or call its write_* methods).
    Needs the PyPI package `pydot` (`pip install brewnet[pycaffe]`); draw_net does not."""
    try:
        import pydot
    except ImportError:
        raise DrawError("get_pydot_graph needs the Python package pydot (pip install pydot, or "
                        "pip install brewnet[pycaffe]); draw_net / get_dot_source work without it") from None
    graphs = pydot.graph_from_dot_data(get_dot_source(caffe_net, rankdir, label_edges, phase, display_lrm))
    return graphs[0]


def draw_net(caffe_net, rankdir="LR", ext="png", phase=None, display_lrm=False):
    """The drawing encoded as `ext` (bytes); 'raw' / 'dot' give the DOT source."""
    source = get_dot_source(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext in ("raw", "dot", "gv"):
        return source.encode()
    dot = shutil.which("dot")
    if dot is None:
        raise BrewnetError("drawing needs Graphviz's 'dot' program on PATH (e.g. apt-get install graphviz); "
                           "the format 'raw' gives the DOT text without it")
    result = subprocess.run([dot, f"-T{ext}"], input=source.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise BrewnetError(f"dot -T{ext} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw into `filename`, the format given by its extension (.png, .svg, .pdf, .raw for DOT text)."""
    ext = os.path.splitext(os.fspath(filename))[1].lstrip(".").lower() or "png"
    image = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(image)
