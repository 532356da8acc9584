"""brewnet/proto/caffe.proto keeps Caffe's schema: every message, enum, enum value, field number, type, label,
packing and default of tests/spec/caffe_schema.txt is in the compiled caffe_pb2.DESCRIPTOR, unchanged.
brewnet's extensions may add fields, messages and enums; they may not change or drop anything of Caffe's.

The schema's format, one item a line (blank lines separate messages):

    enum Phase: TRAIN=0, TEST=1                       a top-level enum
    message FillerParameter                           the fields and nested enums below belong to it
    enum FillerParameter.VarianceNorm: FAN_IN=0, ...  an enum nested in a message
         8 optional FillerParameter.VarianceNorm variance_norm default=FAN_IN     number label type name options
         1 repeated int64 dim packed                  options: `packed`, `default=VALUE` (a string's may be empty)
"""
import dataclasses
import struct

import pytest

from brewnet.proto import caffe_pb2

SCALARS = {"double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "bool": 8, "string": 9, "bytes": 12,
           "uint32": 13}                  # FieldDescriptor.TYPE_* of each scalar the schema names
TYPE_MESSAGE, TYPE_ENUM = 11, 14


@dataclasses.dataclass(frozen=True)
class Field:
    number: int
    label: str          # optional / repeated / required
    type: str           # a scalar, or a message or enum name relative to package caffe (Owner.Enum)
    packed: bool
    default: str | None  # the schema's text of the default, None when it gives none


@dataclasses.dataclass
class Schema:
    messages: dict      # message name -> {field name: Field}
    enums: dict         # enum name (Owner.Enum when nested) -> {value name: number}


def parse_schema(text):
    """The schema's messages and enums; a line of any other form is an error naming it."""
    schema, current = Schema({}, {}), None
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if words[0] == "message" and len(words) == 2:
            current = schema.messages.setdefault(words[1], {})
        elif words[0] == "enum":
            name, values = line[len("enum "):].split(":", 1)
            schema.enums[name.strip()] = {k.strip(): int(v) for k, v in
                                          (pair.split("=") for pair in values.split(","))}
        elif words[0].isdigit() and len(words) >= 4 and current is not None:
            options = words[4:]
            defaults = [o[len("default="):] for o in options if o.startswith("default=")]
            if set(options) - {"packed"} - {f"default={d}" for d in defaults}:
                raise ValueError(f"caffe_schema.txt:{lineno}: unknown option in {line.strip()!r}")
            current[words[3]] = Field(int(words[0]), words[1], words[2], "packed" in options,
                                      defaults[0] if defaults else None)
        else:
            raise ValueError(f"caffe_schema.txt:{lineno}: cannot read {line.strip()!r}")
    return schema


def _type_name(field):
    """The type of a compiled field, spelled as the schema spells it."""
    if field.type in (TYPE_MESSAGE, TYPE_ENUM):
        full = (field.message_type if field.type == TYPE_MESSAGE else field.enum_type).full_name
        return full[len("caffe."):] if full.startswith("caffe.") else full
    return next((name for name, code in SCALARS.items() if code == field.type), f"type code {field.type}")


def _label(field):
    # protobuf >= 7 has is_repeated / is_required and no `label`; 4.x has `label` (1 optional, 2 required).
    if hasattr(field, "is_repeated"):
        return "repeated" if field.is_repeated else "required" if field.is_required else "optional"
    return {1: "optional", 2: "required", 3: "repeated"}[field.label]


def _expected_default(spec, schema):
    """The default the compiled field must report for the schema's default text (floats as float32, as the
    runtime keeps them; enum defaults as their number)."""
    text = spec.default
    if spec.type in ("float", "double"):
        value = float(text)
        return struct.unpack("f", struct.pack("f", value))[0] if spec.type == "float" else value
    if spec.type == "bool":
        return {"true": True, "false": False}[text]
    if spec.type in ("string", "bytes"):
        return text if spec.type == "string" else text.encode()
    if spec.type in SCALARS:
        return int(text)
    return schema.enums.get(spec.type, {}).get(text)


def _compare_field(where, spec, field, schema):
    differences = []
    actual = {"number": field.number, "type": _type_name(field), "label": _label(field),
              "packed": field.GetOptions().packed}
    for what, value in actual.items():
        if value != getattr(spec, what):
            differences.append(f"{where}: {what} is {value!r} in caffe_pb2, {getattr(spec, what)!r} in Caffe")
    if actual["type"] != spec.type:
        return differences                  # the defaults of two types do not compare
    if spec.default is None:
        if field.has_default_value:
            differences.append(f"{where}: caffe_pb2 adds the default {field.default_value!r}; Caffe has none")
    elif not field.has_default_value:
        differences.append(f"{where}: default {spec.default!r} in Caffe, none in caffe_pb2")
    else:
        value = field.default_value
        if spec.type in ("float", "double"):
            value = struct.unpack("f", struct.pack("f", value))[0] if spec.type == "float" else value
        if value != _expected_default(spec, schema):
            differences.append(f"{where}: default is {field.default_value!r} in caffe_pb2, "
                               f"{spec.default!r} in Caffe")
    return differences


def _enum_descriptor(file_descriptor, name):
    owner, _, short = name.rpartition(".")
    if not owner:
        return file_descriptor.enum_types_by_name.get(name)
    message = file_descriptor.message_types_by_name.get(owner)
    return message.enum_types_by_name.get(short) if message else None


def compare_schema(schema, file_descriptor):
    """Every way the compiled file differs from Caffe's schema, one line each naming Message.field or the
    enum; empty when caffe_pb2 keeps all of Caffe (whatever it adds)."""
    differences = []
    for name, values in schema.enums.items():
        enum = _enum_descriptor(file_descriptor, name)
        if enum is None:
            differences.append(f"enum {name}: missing from caffe_pb2")
            continue
        actual = {v.name: v.number for v in enum.values}
        if actual != values:
            differences.append(f"enum {name}: values are {actual} in caffe_pb2, {values} in Caffe")
    for name, fields in schema.messages.items():
        message = file_descriptor.message_types_by_name.get(name)
        if message is None:
            differences.append(f"message {name}: missing from caffe_pb2")
            continue
        for field_name, spec in fields.items():
            field = message.fields_by_name.get(field_name)
            if field is None:
                differences.append(f"{name}.{field_name}: missing from caffe_pb2 (Caffe's field {spec.number})")
            else:
                differences += _compare_field(f"{name}.{field_name}", spec, field, schema)
    return differences


@pytest.fixture
def schema(caffe_schema):
    return parse_schema(caffe_schema)


def test_the_whole_schema_is_read(schema, caffe_schema):
    lines = [line.split() for line in caffe_schema.splitlines() if line.strip()]
    assert len(schema.messages) == sum(words[0] == "message" for words in lines) == 63
    assert sum(map(len, schema.messages.values())) == sum(words[0].isdigit() for words in lines)
    assert len(schema.enums) == sum(words[0] == "enum" for words in lines)
    assert schema.messages["SolverParameter"]["delta"] == Field(31, "optional", "float", False, "1e-08")
    assert schema.messages["ImageDataParameter"]["root_folder"].default == ""
    assert schema.enums["Phase"] == {"TRAIN": 0, "TEST": 1}


def test_caffe_pb2_keeps_every_part_of_caffes_schema(schema):
    differences = compare_schema(schema, caffe_pb2.DESCRIPTOR)
    if differences:
        pytest.fail(f"brewnet/proto/caffe.proto differs from Caffe's schema (tests/spec/caffe_schema.txt) in "
                    f"{len(differences)} places:\n  " + "\n  ".join(differences), pytrace=False)


def _changed(schema, message, field, **change):
    """A copy of `schema` with one field of one message changed (the parsed copy, not the file)."""
    messages = {name: dict(fields) for name, fields in schema.messages.items()}
    messages[message][field] = dataclasses.replace(messages[message][field], **change)
    return Schema(messages, {name: dict(values) for name, values in schema.enums.items()})


@pytest.mark.parametrize("message,field,change,expected", [
    ("LayerParameter", "swish_param", {"number": 149},
     "LayerParameter.swish_param: number is 147 in caffe_pb2, 149 in Caffe"),
    ("BlobProto", "data", {"type": "double"}, "BlobProto.data: type is 'float' in caffe_pb2, 'double' in Caffe"),
    ("FillerParameter", "variance_norm", {"type": "SolverParameter.SolverMode"},
     "FillerParameter.variance_norm: type is 'FillerParameter.VarianceNorm' in caffe_pb2, "
     "'SolverParameter.SolverMode' in Caffe"),
    ("ClipParameter", "min", {"label": "optional"},
     "ClipParameter.min: label is 'required' in caffe_pb2, 'optional' in Caffe"),
    ("Datum", "float_data", {"packed": True}, "Datum.float_data: packed is False in caffe_pb2, True in Caffe"),
    ("SolverParameter", "delta", {"default": "1e-07"},
     "SolverParameter.delta: default is 9.99999993922529e-09 in caffe_pb2, '1e-07' in Caffe"),
    ("SolverParameter", "solver_mode", {"default": "CPU"},
     "SolverParameter.solver_mode: default is 1 in caffe_pb2, 'CPU' in Caffe"),
    ("PythonParameter", "param_str", {"default": "x"},
     "PythonParameter.param_str: default is '' in caffe_pb2, 'x' in Caffe"),
    ("Datum", "label", {"default": "0"}, "Datum.label: default '0' in Caffe, none in caffe_pb2"),
    ("BlobProto", "num", {"default": None}, "BlobProto.num: caffe_pb2 adds the default 0; Caffe has none"),
])
def test_a_changed_field_is_named_with_what_differs(schema, message, field, change, expected):
    assert compare_schema(_changed(schema, message, field, **change), caffe_pb2.DESCRIPTOR) == [expected]


def test_missing_messages_fields_and_changed_enums_are_named(schema):
    schema.messages["GhostLossParameter"] = {}
    schema.messages["LayerParameter"]["ghost_loss_param"] = Field(160, "optional", "GhostLossParameter",
                                                                   False, None)
    schema.enums["Phase"]["VALIDATE"] = 2
    schema.enums["PoolingParameter.Ghost"] = {"A": 0}
    assert compare_schema(schema, caffe_pb2.DESCRIPTOR) == [
        "enum Phase: values are {'TRAIN': 0, 'TEST': 1} in caffe_pb2, {'TRAIN': 0, 'TEST': 1, 'VALIDATE': 2} "
        "in Caffe",
        "enum PoolingParameter.Ghost: missing from caffe_pb2",
        "LayerParameter.ghost_loss_param: missing from caffe_pb2 (Caffe's field 160)",
        "message GhostLossParameter: missing from caffe_pb2",
    ]


def test_an_unreadable_schema_line_is_named():
    with pytest.raises(ValueError, match=r"caffe_schema.txt:3: unknown option in '1 optional int32 x fast'"):
        parse_schema("message A\n     2 optional int32 y\n     1 optional int32 x fast\n")
    with pytest.raises(ValueError, match=r"caffe_schema.txt:1: cannot read 'oneof x'"):
        parse_schema("oneof x\n")


def _compiled_with(edit):
    """caffe.proto's compiled descriptor after `edit(FileDescriptorProto)`, in a pool of its own."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    proto = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(proto)
    edit(proto)
    return descriptor_pool.DescriptorPool().Add(proto)


def _message(proto, name):
    return next(m for m in proto.message_type if m.name == name)


def test_extensions_may_add_but_not_change(schema):
    def extend(proto):                      # what the next layers add: a message and a LayerParameter field
        proto.message_type.add(name="GhostLossParameter").field.add(name="num_output", number=1, type=13,
                                                                     label=1)
        _message(proto, "LayerParameter").field.add(name="ghost_loss_param", number=160, type=11, label=1,
                                                    type_name=".caffe.GhostLossParameter")

    def renumber(proto):                    # an extension that takes Caffe's number moves Caffe's field
        next(f for f in _message(proto, "LayerParameter").field if f.name == "swish_param").number = 4095

    assert compare_schema(schema, _compiled_with(extend)) == []
    assert compare_schema(schema, _compiled_with(renumber)) == [
        "LayerParameter.swish_param: number is 4095 in caffe_pb2, 147 in Caffe"]
