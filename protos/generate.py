"""Regenerate the protobuf and gRPC modules from ``protos/pedsam.proto``.

Run from anywhere: ``python protos/generate.py``. The generated files are committed;
``tests/test_protos.py`` fails when they drift from the ``.proto``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(out_dir: Path = ROOT) -> int:
    """Write ``protos/pedsam_pb2{,_grpc}.py`` and ``pedsam_pb2.pyi`` under ``out_dir``."""
    from grpc_tools import protoc

    return int(
        protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{ROOT}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(ROOT / "protos" / "pedsam.proto"),
            ]
        )
    )


if __name__ == "__main__":
    sys.exit(generate())
