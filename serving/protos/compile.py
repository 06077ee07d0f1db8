"""Regenerate the committed ``*_pb2.py`` / ``*_pb2_grpc.py`` from the ``.proto`` files here.

Run from anywhere (needs grpcio-tools, a dev dependency only)::

    python serving/protos/compile.py

The protos are compiled under the include path ``tfllm_serving/protos/`` so their
descriptor file names cannot collide with other libraries' files; the generated
imports are then made package-relative so the code works wherever the package lives.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("tf_error_codes.proto", "tf_framework.proto", "tf_serving_apis.proto")


def _make_imports_relative(path: Path) -> None:
    text = path.read_text()
    text = re.sub(
        r"^from tfllm_serving\.protos import (\w+) as (\w+)$",
        r"from . import \1 as \2",
        text,
        flags=re.M,
    )
    path.write_text(text)


def main() -> int:
    """Compile every proto in this folder in place; return protoc's exit status."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        # A link named like the import package gives the descriptors their unique names.
        root = Path(tmp)
        (root / "tfllm_serving").mkdir()
        (root / "tfllm_serving" / "protos").symlink_to(HERE)
        args = [
            "protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={root}",
            f"--grpc_python_out={root}",
            *[f"tfllm_serving/protos/{name}" for name in PROTOS],
        ]
        status = protoc.main(args)
    if status != 0:
        return status
    for generated in HERE.glob("*_pb2*.py"):
        if generated.name.endswith("_grpc.py") and "Stub" not in generated.read_text():
            generated.unlink()  # protos without services get an empty grpc module
            continue
        _make_imports_relative(generated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
