"""Turn ../shared/spec/caffe_schema.txt (Caffe's message/field table) into brewnet/proto/caffe.proto.

Run once when the schema changes; the .proto and the generated caffe_pb2.py are committed, so installing
brewnet needs neither this script nor protoc.  Usage: python scripts/schema_to_proto.py SCHEMA OUT.proto
"""
import re
import sys

SCALARS = {"double", "float", "int32", "int64", "uint32", "uint64", "bool", "string", "bytes"}


def convert(lines):
    messages, order, enums, top_enums = {}, [], {}, []
    current = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("message "):
            current = line.split()[1]
            messages[current] = []
            order.append(current)
        elif line.startswith("enum "):
            name, values = line[5:].split(":", 1)
            pairs = [v.strip().split("=") for v in values.split(",")]
            if "." in name:
                owner, short = name.split(".")
                enums.setdefault(owner, []).append((short, pairs))
            else:
                top_enums.append((name, pairs))
        else:
            parts = line.split()
            number, label, ftype, fname = parts[:4]
            opts = parts[4:]
            messages[current].append((int(number), label, ftype, fname, opts))

    out = ['syntax = "proto2";', "", "package caffe;", ""]
    for name, pairs in top_enums:
        out.append(f"enum {name} {{")
        out += [f"  {k} = {v};" for k, v in pairs]
        out += ["}", ""]
    for msg in order:
        out.append(f"message {msg} {{")
        for short, pairs in enums.get(msg, []):
            out.append(f"  enum {short} {{")
            out += [f"    {k} = {v};" for k, v in pairs]
            out.append("  }")
        for number, label, ftype, fname, opts in messages[msg]:
            ptype = ftype.split(".")[-1] if ftype.startswith(msg + ".") else ftype
            extra = []
            for opt in opts:
                if opt == "packed":
                    extra.append("packed = true")
                elif opt.startswith("default="):
                    value = opt[len("default="):]
                    if ftype == "string":
                        value = '"%s"' % value
                    extra.append(f"default = {value}")
            suffix = f" [{', '.join(extra)}]" if extra else ""
            out.append(f"  {label} {ptype} {fname} = {number}{suffix};")
        out += ["}", ""]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        text = convert(f)
    header = ("// brewnet's caffe.proto: wire-compatible with BVLC Caffe (same messages, field numbers, types and\n"
              "// defaults), generated from the conformance schema by scripts/schema_to_proto.py.\n")
    with open(sys.argv[2], "w") as f:
        f.write(header + text)
