"""The committed protobuf/gRPC modules and their .pyi stubs are what pedsam.proto generates."""

from __future__ import annotations

from pathlib import Path

from pedsam.protos import pedsam_pb2 as pb
from pedsam.protos.generate import ROOT, generate

GENERATED = ("pedsam_pb2.py", "pedsam_pb2.pyi", "pedsam_pb2_grpc.py")


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    assert generate(tmp_path) == 0
    for name in GENERATED:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert committed == fresh, f"protos/{name} is stale: run python protos/generate.py and commit it"


def test_wire_contract_carries_raw_bytes() -> None:
    """Tokens travel as one bytes field, never as repeated floats (DESIGN: raw tensor bytes)."""
    from google.protobuf.descriptor import FieldDescriptor

    data = pb.Tensor.DESCRIPTOR.fields_by_name["data"]
    assert data.type == FieldDescriptor.TYPE_BYTES
    floats = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for field in message.fields:
            repeated = getattr(field, "is_repeated", None)
            is_repeated = repeated if isinstance(repeated, bool) else field.label == FieldDescriptor.LABEL_REPEATED
            if is_repeated:
                assert field.type not in floats, f"{message.name}.{field.name} is a repeated float"
