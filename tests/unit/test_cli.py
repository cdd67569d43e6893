"""The `dfl` command line: identities, and what it says when there is nothing to audit."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from node.ledger.errors import RejectReason
from node.ledger.keys import NodeKey
from orchestrator.cli import main


def test_keygen_creates_a_key_prints_its_address_and_never_overwrites(tmp_path, capsys) -> None:
    assert main(["keygen", str(tmp_path / "node")]) == 0
    printed = capsys.readouterr().out
    address = NodeKey.load(tmp_path / "node").address.hex()
    assert f"address {address}" in printed

    assert main(["keygen", str(tmp_path / "node")]) == 1
    assert "exists" in capsys.readouterr().err
    assert NodeKey.load(tmp_path / "node").address.hex() == address


def test_chain_verify_without_a_store_exits_2_naming_the_path(tmp_path, capsys) -> None:
    assert main(["chain", "verify", str(tmp_path)]) == 2
    assert "no chain store at" in capsys.readouterr().err


def test_chain_verify_on_a_file_that_is_not_sqlite_exits_1(tmp_path, capsys) -> None:
    bogus = tmp_path / "chain.sqlite"
    bogus.write_bytes(b"definitely not a database" * 100)
    assert main(["chain", "verify", str(bogus)]) == 1
    assert capsys.readouterr().out.startswith("INVALID")


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in ("keygen", "chain"):
        assert command in out


@pytest.mark.parametrize("reason", list(RejectReason), ids=lambda r: r.label)
def test_every_reject_reason_maps_to_a_real_grpc_status(reason: RejectReason) -> None:
    assert grpc.StatusCode[reason.grpc_status] is not grpc.StatusCode.OK


def test_control_key_makes_a_key_says_how_to_pass_it_and_never_overwrites(tmp_path, capsys) -> None:
    from node.service.control import ControlSigner

    assert main(["control-key", str(tmp_path / "keys")]) == 0
    printed = capsys.readouterr().out
    signer = ControlSigner.load(tmp_path / "keys" / "control_key.pem")
    assert f"DFL_NODE_CONTROL_KEY={signer.public_hex}" in printed
    assert "--control-key" in printed
    assert main(["control-key", str(tmp_path / "keys")]) == 1
    assert ControlSigner.load(tmp_path / "keys" / "control_key.pem").public_hex == signer.public_hex


def test_orchestrate_without_a_control_key_says_how_to_make_one(capsys, monkeypatch) -> None:
    monkeypatch.delenv("DFL_CONTROL_KEY", raising=False)
    spec = str(Path(__file__).resolve().parents[2] / "experiments" / "compose-dfl.yaml")
    nodes = [f"--node=node{i}=node{i}:50051" for i in range(4)]
    assert main(["orchestrate", spec, *nodes]) == 2
    assert "dfl control-key DIR" in capsys.readouterr().err
