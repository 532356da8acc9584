"""A Net's trained weights: copied from a caffemodel (binary or HDF5), shared with another net by layer name
(the test nets share the train net's), written back as a NetParameter, a caffemodel or an HDF5 file
(Caffe's Net::CopyTrainedLayersFrom, ShareTrainedLayersWith, ToProto, ToHDF5).  The Net mixes these in."""
import os

import numpy as np
import torch

from ..errors import WeightsError
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger("net")


class NetWeights:
    def copy_trained_layers_from(self, source):
        """Copy parameters by layer name from a caffemodel (path or NetParameter) or a .caffemodel.h5."""
        from ..proto.weights import load_weights, shape_matches
        weights = load_weights(source)
        copied = 0
        for layer_name, arrays in weights.items():
            if layer_name not in self._layer_index:
                log.info("Ignoring source layer %s", layer_name)
                continue
            layer_id = self._layer_index[layer_name]
            target = self.layers[layer_id].blobs
            if len(arrays) > len(target):
                raise WeightsError(f"{_describe(source)}: Incompatible number of blobs for layer '{layer_name}': "
                                   f"the weights have {len(arrays)}, the net's layer has {len(target)}")
            for j, blob in enumerate(target):
                array = arrays[j] if j < len(arrays) else None
                if array is None:
                    # An HDF5 file omits parameters owned by another layer; anything else is missing data.
                    if self.param_owners[self.param_id_vecs[layer_id][j]] != -1 and _is_hdf5(source):
                        continue
                    raise WeightsError(f"{_describe(source)}: Incompatible number of blobs for layer "
                                       f"'{layer_name}': no values for param {j} (the net's layer has "
                                       f"{len(target)})")
                if not shape_matches(blob.shape, array):
                    raise WeightsError(
                        f"{_describe(source)}: Cannot copy param {j} weights from layer '{layer_name}'; "
                        f"shape mismatch.  Source param shape is {_shape_str(array.shape)}; target param shape "
                        f"is {blob.shape_string()}. To learn this layer's parameters from scratch rather "
                        "than copying from a saved net, rename the layer.")
                blob.data.copy_(torch.from_numpy(np.ascontiguousarray(array)).reshape(blob.shape))
                copied += 1
        if copied == 0:
            self._nothing_copied(source, weights)

    def _nothing_copied(self, source, weights):
        """Caffe goes on with the fillers' random values when no layer name matches (a renamed net, the wrong
        file); that is almost always a mistake, so it is an error here.  Single unmatched layers stay a log
        line ("Ignoring source layer"), as in Caffe."""
        if not weights:
            raise WeightsError(f"{_describe(source)}: the weights file holds no layers (empty, or not a "
                               "caffemodel / HDF5 weights file); no parameter was copied")
        wanted = [name for name, layer in zip(self.layer_names, self.layers) if layer.blobs]
        if not wanted:
            return          # a net without parameters has nothing to copy
        have = [name for name, arrays in weights.items() if arrays]
        raise WeightsError(f"{_describe(source)}: no parameter was copied: no layer name in the weights "
                           f"matches a layer with parameters in net '{self.name}' (the weights have "
                           f"{_few(have or list(weights))}; the net has {_few(wanted)})")

    copy_from = copy_trained_layers_from

    def share_trained_layers_with(self, other):
        """Point this net's parameters at `other`'s memory, by layer name (test nets share the train net's)."""
        for source_layer, name in zip(other.layers, other.layer_names):
            if name not in self._layer_index:
                log.info("Ignoring source layer %s", name)
                continue
            target = self.layers[self._layer_index[name]]
            if len(target.blobs) != len(source_layer.blobs):
                raise WeightsError(f"Incompatible number of blobs for layer '{name}': "
                                   f"{len(source_layer.blobs)} vs {len(target.blobs)}")
            for j, source_blob in enumerate(source_layer.blobs):
                if target.blobs[j].shape != source_blob.shape:
                    raise WeightsError(f"Cannot share param {j} weights from layer '{name}'; shape mismatch. "
                                       f"Source param shape is {source_blob.shape_string()}; target param "
                                       f"shape is {target.blobs[j].shape_string()}")
                target.blobs[j].share_data(source_blob)

    def to_proto(self, write_diff=False):
        """The net as a NetParameter with every layer's parameter blobs (what a caffemodel holds)."""
        param = caffe_pb2.NetParameter()
        param.name = self.name
        for layer in self.layers:
            lp = param.layer.add()
            lp.CopyFrom(layer.layer_param)
            del lp.blobs[:]
            for blob in layer.blobs:
                blob.to_proto(lp.blobs.add(), write_diff=write_diff)
        return param

    def save(self, path, write_diff=False):
        from ..proto.io import write_binary
        write_binary(self.to_proto(write_diff), path)

    def save_hdf5(self, path, write_diff=False):
        from ..proto.weights import save_hdf5
        save_hdf5(self, path, write_diff=write_diff)


def _shape_str(shape):
    return "".join(f"{s} " for s in shape) + f"({int(np.prod(shape)) if shape else 1})"


def _few(names, limit=5):
    listed = ", ".join(f"'{n}'" for n in names[:limit])
    return listed + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _is_hdf5(source):
    from ..proto.weights import is_hdf5
    return isinstance(source, (str, os.PathLike)) and is_hdf5(os.fspath(source))


def _describe(source):
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else "NetParameter"
