"""Compile brewnet/proto/caffe.proto (the hand-maintained source) into caffe_pb2.py, without the runtime pin.

Usage: python scripts/gen_pb2.py brewnet/proto   (what `make proto` runs; protoc comes from grpcio-tools, the
`dev` extra).  Both files are committed, so installing or using brewnet needs neither protoc nor this script.

The generated module only calls descriptor_pool.AddSerializedFile and the builder, which every protobuf runtime
since 4.21 provides; the version check protoc adds would tie brewnet to the exact protoc release.
"""
import pathlib
import re
import sys

try:
    from grpc_tools import protoc
except ImportError:
    raise SystemExit("scripts/gen_pb2.py needs protoc from grpcio-tools: pip install -e '.[dev]'")

folder = pathlib.Path(sys.argv[1])
if protoc.main(["protoc", f"-I{folder}", f"--python_out={folder}", str(folder / "caffe.proto")]) != 0:
    raise SystemExit(f"protoc failed on {folder / 'caffe.proto'} (its messages are above)")
out = folder / "caffe_pb2.py"
src = out.read_text()
src = src.replace("from google.protobuf import runtime_version as _runtime_version\n", "")
src = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)\n", "", src)
src = src.replace("# NO CHECKED-IN PROTOBUF GENCODE\n",
                  "# Checked in (regenerate with `make proto`); the runtime-version pin is removed so that any\n"
                  "# protobuf >= 4.21 runtime loads it.\n")
out.write_text(src)
