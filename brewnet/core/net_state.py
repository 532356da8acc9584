"""NetState filtering: which layers a net built for a given phase, level and stages keeps.

A layer with `include` rules is kept when any rule matches; one with `exclude` rules is dropped when any rule
matches; a layer may have one kind of rule, not both.  A rule matches when its phase (if given) is the state's,
the state's level lies within [min_level, max_level], every `stage` is in the state and no `not_stage` is.
"""
from ..errors import NetError
from ..proto import caffe_pb2


def state_meets_rule(state, rule, layer_name, log=None):
    def reject(message):
        if log is not None:
            log.info("%s specified by a rule in layer %s", message, layer_name)
        return False

    if rule.HasField("phase") and rule.phase != state.phase:
        return reject(f"The NetState phase ({state.phase}) differed from the phase ({rule.phase})")
    if rule.HasField("min_level") and state.level < rule.min_level:
        return reject(f"The NetState level ({state.level}) is above the min_level ({rule.min_level})")
    if rule.HasField("max_level") and state.level > rule.max_level:
        return reject(f"The NetState level ({state.level}) is above the max_level ({rule.max_level})")
    for stage in rule.stage:
        if stage not in state.stage:
            return reject(f"The NetState did not contain stage '{stage}'")
    for stage in rule.not_stage:
        if stage in state.stage:
            return reject(f"The NetState contained a not_stage '{stage}'")
    return True


def filter_net(param, log=None):
    """A copy of `param` holding only the layers its NetState selects."""
    filtered = caffe_pb2.NetParameter()
    filtered.CopyFrom(param)
    del filtered.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError(f"layer '{layer.name}': specify either include rules or exclude rules; not both")
        included = len(layer.include) == 0
        for rule in layer.exclude:
            if included and state_meets_rule(param.state, rule, layer.name, log):
                included = False
        for rule in layer.include:
            if not included and state_meets_rule(param.state, rule, layer.name, log):
                included = True
        if included:
            filtered.layer.add().CopyFrom(layer)
    return filtered
