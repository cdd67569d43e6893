"""The checked-in generated code must be what scripts/gen_proto.py makes from the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)

    fresh = gen_proto.generate(tmp_path)

    assert fresh, "protoc produced nothing"
    checked_in = sorted((ROOT / "proto/dfl/v1").glob("*_pb2*.py*"))
    assert [p.name for p in fresh] == [p.name for p in checked_in]
    for path in fresh:
        assert path.read_bytes() == (ROOT / "proto/dfl/v1" / path.name).read_bytes(), (
            f"proto/dfl/v1/{path.name} is stale: run `python scripts/gen_proto.py`"
        )
