"""Solver's nets (Caffe's Solver::InitTrainNet and InitTestNets): the train net and the test nets a
SolverParameter names, each with its NetState (phase, level, stages), the `weights` to start from copied in.
A mixin of Solver (base.py), which uses `self.param` and `self.source`.
"""
import os

from ..core.net import Net
from ..errors import SolverError
from ..log import get_logger
from ..proto import caffe_pb2

log = get_logger("solver")


class SolverNets:
    def _read_net(self, path, field):
        """A net file named by the solver; relative paths are tried from the working directory first (Caffe),
        then next to the solver file (convenient when running from elsewhere)."""
        from ..proto.io import read_net_param
        candidates = [path]
        if not os.path.isabs(path) and os.path.exists(self.source):
            candidates.append(os.path.join(os.path.dirname(os.path.abspath(self.source)), path))
        for candidate in candidates:
            if os.path.exists(candidate):
                return read_net_param(candidate)
        raise SolverError(f"{self.source}: net file '{path}' (solver field '{field}') not found "
                          f"(working directory {os.getcwd()})")

    def _init_train_net(self):
        p = self.param
        fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(fields) != 1:
            raise SolverError(f"{self.source}: SolverParameter must specify exactly one train net using one of "
                              f"the fields net, net_param, train_net, train_net_param (found "
                              f"{', '.join(fields) or 'none'})")
        field = fields[0]
        if field.endswith("_param"):
            log.info("Creating training net specified in %s.", field)
            net_param = caffe_pb2.NetParameter()
            net_param.CopyFrom(getattr(p, field))
        else:
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
            net_param = self._read_net(getattr(p, field), field)
        state = caffe_pb2.NetState(phase=caffe_pb2.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        net = Net(net_param)
        self._load_weights(net)
        return net

    def _init_test_nets(self):
        p = self.param
        generic = int(p.HasField("net")) + int(p.HasField("net_param"))
        if generic > 1:
            raise SolverError(f"{self.source}: Both net_param and net_file may not be specified.")
        specific = len(p.test_net_param) + len(p.test_net)
        if (generic and len(p.test_iter) < specific) or (not generic and len(p.test_iter) != specific):
            raise SolverError(f"{self.source}: test_iter must be specified for each test network "
                              f"({specific} test nets, {len(p.test_iter)} test_iter)")
        instances = specific + (len(p.test_iter) - specific if generic else 0)
        if len(p.test_state) and len(p.test_state) != instances:
            raise SolverError(f"{self.source}: test_state must be unspecified or specified once per test net "
                              f"({instances} test nets, {len(p.test_state)} test_state)")
        if instances and p.test_interval <= 0:
            raise SolverError(f"{self.source}: test_interval must be > 0 when there are test nets "
                              f"(test_iter is given {len(p.test_iter)} times)")
        sources = []
        for net_param in p.test_net_param:
            copy = caffe_pb2.NetParameter()
            copy.CopyFrom(net_param)
            sources.append(("test_net_param", copy))
        for path in p.test_net:
            sources.append((f"test_net file: {path}", self._read_net(path, "test_net")))
        for _ in range(instances - specific):
            if p.HasField("net_param"):
                copy = caffe_pb2.NetParameter()
                copy.CopyFrom(p.net_param)
                sources.append(("net_param", copy))
            else:
                sources.append((f"net file: {p.net}", self._read_net(p.net, "net")))
        nets = []
        for i, (where, net_param) in enumerate(sources):
            state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            net_param.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, where)
            net = Net(net_param)
            net.debug_info = p.debug_info
            self._load_weights(net)
            nets.append(net)
        return nets

    def _load_weights(self, net):
        for model_list in self.param.weights:
            for name in model_list.split(","):
                name = name.strip()
                log.info("Finetuning from %s", name)
                net.copy_trained_layers_from(name)
