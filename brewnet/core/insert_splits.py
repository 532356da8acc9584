"""Split insertion: a blob consumed by several layers is copied into one top per consumer.

Caffe overwrites bottom diffs in Backward, so two consumers writing the same blob's diff would clobber each
other; a Split layer gives each consumer its own top and sums their diffs on the way back.  A top with a loss
weight that is also read by another layer counts the loss as one more consumer: the first split output carries
the weight.  Names follow Caffe: layer `<blob>_<layer>_<index>_split`, tops `<blob>_<layer>_<index>_split_<k>`.
"""
from ..errors import NetError
from ..proto import caffe_pb2


def split_layer_name(layer_name, blob_name, blob_index):
    return f"{blob_name}_{layer_name}_{blob_index}_split"


def split_blob_name(layer_name, blob_name, blob_index, split_index):
    return f"{blob_name}_{layer_name}_{blob_index}_split_{split_index}"


def insert_splits(param):
    last_producer = {}          # blob name -> (layer index, top index) of its latest producer
    source_of_bottom = {}       # (layer, bottom index) -> (layer, top index)
    consumers = {}              # (layer, top index) -> number of readers (loss counts as one)
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_producer:
                raise NetError(f"Unknown bottom blob '{name}' (layer '{layer.name}', bottom index {j})")
            source = last_producer[name]
            source_of_bottom[(i, j)] = source
            consumers[source] = consumers.get(source, 0) + 1
        for j, name in enumerate(layer.top):
            last_producer[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            source = last_producer[layer.top[j]]
            loss_weight[source] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                consumers[source] = consumers.get(source, 0) + 1

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {}
    for i, original in enumerate(param.layer):
        layer = out.layer.add()
        layer.CopyFrom(original)
        for j in range(len(layer.bottom)):
            source = source_of_bottom[(i, j)]
            if consumers.get(source, 0) > 1:
                k = next_split.get(source, 0)
                next_split[source] = k + 1
                layer.bottom[j] = split_blob_name(param.layer[source[0]].name, layer.bottom[j], source[1], k)
        for j, name in enumerate(layer.top):
            count = consumers.get((i, j), 0)
            if count > 1:
                weight = loss_weight.get((i, j), 0.0)
                split = out.layer.add()
                split.name = split_layer_name(layer.name, name, j)
                split.type = "Split"
                split.bottom.append(name)
                for k in range(count):
                    split.top.append(split_blob_name(layer.name, name, j, k))
                    if weight:
                        split.loss_weight.append(weight if k == 0 else 0.0)
                if weight:
                    del layer.loss_weight[:]
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out
