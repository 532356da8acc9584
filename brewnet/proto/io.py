"""Read and write Caffe's protobuf files: prototxt text and binary (caffemodel, binaryproto, solverstate).

Every failure names the file; text parse errors also give line:col, as protoc does.
"""
import os

from google.protobuf import message as _message
from google.protobuf import text_format

from ..errors import ProtoError
from . import caffe_pb2


def read_text(path, message):
    """Parse a prototxt file into `message` (an instance) and return it."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ProtoError(f"cannot open prototxt: {e.strerror}", path) from None
    return parse_text(text, message, path)


def parse_text(text, message, path="<string>"):
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as e:
        line, column = e.GetLine(), e.GetColumn()
        reason = str(e)
        # protobuf prefixes "line:col : " itself; keep only the reason so the location appears once.
        if line is not None and reason.startswith(f"{line}:"):
            reason = reason.split(" : ", 1)[-1]
        raise ProtoError(reason, path, line, column) from None
    return message


def write_text(message, path):
    _atomic_write(path, text_format.MessageToString(message).encode("utf-8"))


def read_binary(path, message):
    """Parse a binary proto (caffemodel, binaryproto, solverstate) into `message`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ProtoError(f"cannot open binary proto: {e.strerror}", path) from None
    try:
        message.ParseFromString(data)
    except _message.DecodeError as e:
        raise ProtoError(f"not a valid {message.DESCRIPTOR.name} (truncated or corrupt, {len(data)} bytes): {e}",
                         path) from None
    return message


def write_binary(message, path):
    _atomic_write(path, message.SerializeToString())


def _atomic_write(path, payload):
    """Write to a temporary file in the same folder, flush to disk, then rename: readers never see half a file."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ProtoError(f"cannot write: {e.strerror}", path) from None


def read_net_param(path):
    """Text or binary NetParameter (the way Caffe's ReadNetParamsFromTextFile/BinaryFile do), upgraded."""
    from .upgrade import upgrade_net_as_needed
    net = caffe_pb2.NetParameter()
    if _looks_binary(path):
        read_binary(path, net)
    else:
        read_text(path, net)
    return upgrade_net_as_needed(net, path)


def read_solver_param(path):
    """A solver prototxt as Caffe's ReadSolverParamsFromTextFileOrDie reads it: `solver_type` upgraded, and
    snapshot_prefix defaulted to the file's path without extension (or put inside a directory prefix)."""
    from .upgrade import upgrade_snapshot_prefix, upgrade_solver_as_needed
    solver = read_text(path, caffe_pb2.SolverParameter())
    upgrade_solver_as_needed(solver, path)
    return upgrade_snapshot_prefix(solver, path)


def _looks_binary(path):
    path = os.fspath(path)
    if path.endswith((".prototxt", ".pt", ".txt")):
        return False
    if path.endswith((".caffemodel", ".binaryproto", ".pb")):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise ProtoError(f"cannot open: {e.strerror}", path) from None
    try:
        head.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True
