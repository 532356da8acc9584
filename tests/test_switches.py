"""brewnet/switches.py: one place lists every BREWNET_* variable the library reads, each read when used."""
import pathlib
import re

import pytest

from brewnet.runtime.net_runtime import NetRuntime
from brewnet import switches
from brewnet.runtime import precision
from brewnet.core.net import Net
from brewnet.proto import caffe_pb2
from brewnet.proto.io import parse_text

PACKAGE = pathlib.Path(switches.__file__).parent


def test_every_variable_the_library_reads_is_listed():
    used = set()
    for path in PACKAGE.rglob("*.py"):
        used |= set(re.findall(r"BREWNET_[A-Z0-9_]+", path.read_text()))
    library = {name for name in used if name not in ("BREWNET_GOLDEN", "BREWNET_SCHEMA", "BREWNET_TEST_MODE",
                                                      "BREWNET_BOOK_THREADS")}
    assert library == set(switches.DEFAULTS)
    for name in switches.DEFAULTS:       # and the table in the module's docstring documents each
        assert f"| {name}" in switches.__doc__


def test_values_are_read_when_used(monkeypatch):
    monkeypatch.delenv("BREWNET_FUSE", raising=False)
    assert switches.on("BREWNET_FUSE")
    monkeypatch.setenv("BREWNET_FUSE", "0")
    assert not switches.on("BREWNET_FUSE")
    monkeypatch.setenv("BREWNET_FUSE", "")          # empty means the default, as unset
    assert switches.on("BREWNET_FUSE")
    monkeypatch.setenv("BREWNET_DIST_TIMEOUT", "12.5")
    assert switches.dist_timeout() == 12.5 and switches.dist_timeout(3) == 3.0
    monkeypatch.setenv("BREWNET_PRECISION", "bf16")
    assert precision.get_precision() == "bf16"


NET = 'input: "x" input_shape { dim: 2 dim: 3 } layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" ' \
      'inner_product_param { num_output: 2 } }'


@pytest.mark.parametrize("env, expected", [(None, True), ("0", False), ("1", True)])
def test_a_net_reads_brewnet_fuse_when_it_is_built(monkeypatch, env, expected):
    if env is None:
        monkeypatch.delenv("BREWNET_FUSE", raising=False)
    else:
        monkeypatch.setenv("BREWNET_FUSE", env)
    net = Net(parse_text(NET, caffe_pb2.NetParameter()), caffe_pb2.TEST)
    assert net.runtime.fuse_layers is expected
    monkeypatch.setattr(NetRuntime, "fuse_layers", False)        # the in-code flag wins over the variable
    assert Net(parse_text(NET, caffe_pb2.NetParameter()), caffe_pb2.TEST).runtime.fuse_layers is False
