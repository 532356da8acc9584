"""Layer fusion: runs of layers the Net executes as one step where nothing outside can tell the difference.

A layer class that can lead such a run names its group class as `fusion` (core/layer.py); the group's
`match(net, i)` decides whether the layers after layer i belong with it and returns the group, or None.  The
one built in is BatchNorm + Scale in place on one blob (layers/batch_norm_scale.py).  A group has `first` and
`last` (its layer indices), `forward()` and `backward()` (all its layers' Forward and Backward, as the Net
would ask them), `fused_forward` (whether its layers' last Forward ran as one step) and `unfuse()` (give the
layers the state their own Backward reads after a fused Forward).

The Net runs a group as one step only when the whole group is inside the requested layer range and
debug_info is off (its log prints every layer).  A Backward that starts inside a fused group first unfuses
it.  Layers called directly (`net.layers[i].Forward`) run unfused and are not tracked: use the Net.
"""


def find_groups(net):
    """The groups of `net`, in layer order: each layer that names a fusion class is asked whether it leads one
    (a layer already inside a group leads none)."""
    groups = []
    for i, layer in enumerate(net.layers):
        if layer.fusion is None or (groups and i <= groups[-1].last):
            continue
        group = layer.fusion.match(net, i)
        if group is not None:
            groups.append(group)
    return groups
