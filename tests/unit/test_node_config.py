"""Node settings: a file, DFL_NODE_* overrides, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.service.config import NodeConfigError, load_node_config


def test_file_then_environment_then_keywords(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("name: n1\nport: 6000\npeers: [a:1]\ndfl: {ttl: 2}\n")
    config = load_node_config(path, {"DFL_NODE_PORT": "6001", "DFL_NODE_PEERS": "b:2, c:3"})
    assert (config.name, config.port, config.peers) == ("n1", 6001, ("b:2", "c:3"))
    assert config.dfl_config().ttl == 2
    assert config.address == "127.0.0.1:6001"
    assert load_node_config(path, {}, port=7000).port == 7000


@pytest.mark.parametrize(
    ("text", "environ", "field"),
    [
        ("port: 70000\n", {}, "port"),
        ("colour: blue\n", {}, "colour"),
        ("protocol: blade\n", {}, "protocol"),
        (
            "protocol: blade-fl\nblade: {clients: 4, rounds: 2, local_iterations: 1}\n",
            {},
            "difficulty",
        ),
        (
            "protocol: blade-fl\n"
            "blade: {clients: 0, rounds: 2, local_iterations: 1, difficulty: 9}",
            {},
            "clients",
        ),
        ("dfl: {ttl: 0}\n", {}, "dfl"),
        ("", {"DFL_NODE_PROT": "1"}, "DFL_NODE_PROT"),
        ("port: [\n", {}, "node.yaml"),
    ],
)
def test_a_bad_setting_names_its_field(tmp_path: Path, text: str, environ, field: str) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    with pytest.raises(NodeConfigError, match=field):
        load_node_config(path, environ)
