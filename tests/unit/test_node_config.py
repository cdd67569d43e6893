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


def test_a_node_started_without_settings_listens_on_loopback_only() -> None:
    assert load_node_config(None, environ={}).listen == "127.0.0.1"


def test_control_keys_come_from_the_config_and_a_file(tmp_path) -> None:
    from node.service.control import ControlSigner

    first, second = ControlSigner.generate(), ControlSigner.generate()
    second.save(tmp_path)
    config = load_node_config(
        None,
        environ={"DFL_NODE_CONTROL_KEY": first.public_hex},
        control_key_file=tmp_path / "control_key.pub",
    )
    assert config.control_keys() == (first.key.public_key, second.key.public_key)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"control_key": "04abcd"}, "control_key"),
        ({"control_key_file": "/nonexistent/control_key.pub"}, "control_key_file"),
        ({"limits": {"max_pending_ml": 0}}, "max_pending_ml"),
        ({"limits": {"queue": 3}}, "limits"),
    ],
)
def test_bad_control_or_limit_settings_name_their_field(settings, field: str) -> None:
    with pytest.raises(NodeConfigError, match=field):
        load_node_config(None, environ={}, **settings)


def test_the_append_hold_is_off_unless_the_node_config_sets_it(tmp_path: Path) -> None:
    assert load_node_config(None, environ={}).hold_append is None
    marker = tmp_path / "held"
    config = load_node_config(None, environ={"DFL_NODE_HOLD_APPEND": str(marker)})
    assert config.hold_append == marker
