"""Regenerate the protobuf and gRPC modules from ``protos/pedsam.proto``.

Run from anywhere: ``python protos/generate.py``. The generated files are committed;
``tests/test_protos.py`` fails when they drift from the ``.proto``.

The ``.proto`` is compiled as ``pedsam/protos/pedsam.proto``, the path it has once installed, so
the generated gRPC module imports ``pedsam.protos.pedsam_pb2`` through pedsam's namespace. The
protobuf package (``pedsam``) and so every name on the wire are unchanged by that path.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("pedsam_pb2.py", "pedsam_pb2.pyi", "pedsam_pb2_grpc.py")


def generate(out_dir: Path = ROOT) -> int:
    """Write ``protos/pedsam_pb2{,_grpc}.py`` and ``pedsam_pb2.pyi`` under ``out_dir``."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as staging:
        stage = Path(staging)
        (stage / "pedsam" / "protos").mkdir(parents=True)
        shutil.copy(ROOT / "protos" / "pedsam.proto", stage / "pedsam" / "protos" / "pedsam.proto")
        status = int(
            protoc.main(
                [
                    "grpc_tools.protoc",
                    f"-I{stage}",
                    f"--python_out={stage}",
                    f"--pyi_out={stage}",
                    f"--grpc_python_out={stage}",
                    str(stage / "pedsam" / "protos" / "pedsam.proto"),
                ]
            )
        )
        if status == 0:
            (out_dir / "protos").mkdir(parents=True, exist_ok=True)
            for name in GENERATED:
                shutil.copy(stage / "pedsam" / "protos" / name, out_dir / "protos" / name)
    return status


if __name__ == "__main__":
    sys.exit(generate())
