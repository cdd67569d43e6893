"""`dfl load`'s tasks: weights from the command line, request names, and the verdict on each
answer (a refusal that a forged record must get is a success; anything else is a failure named
by what the node said)."""

from __future__ import annotations

import pytest

from node.ledger.errors import RejectReason
from orchestrator.cli import main
from orchestrator.load.tasks import (
    FORGED_KINDS,
    REQUESTS,
    SUCCEEDS,
    TASKS,
    UNSIGNED,
    expected_of,
    parse_weights,
    reason_of,
    request_name,
    split_name,
    verdict,
)


def test_no_task_option_runs_every_task_once_in_the_mix() -> None:
    assert parse_weights([]) == dict.fromkeys(TASKS, 1)


def test_named_tasks_are_the_whole_mix_and_a_bare_name_weighs_one() -> None:
    assert parse_weights(["transaction=5", "forged", "status=0"]) == {
        "transaction": 5,
        "forged": 1,
    }


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            ["transction=5"],
            "the tasks are inject, status, model, transaction, forged, unauthenticated",
        ),
        (["forged=-1"], "whole number >= 0"),
        (["forged=lots"], "whole number >= 0"),
        (["forged=0", "status=0"], "every weight is 0"),
    ],
)
def test_a_bad_task_option_says_what_is_wrong(items: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weights(items)


def test_the_command_refuses_a_misspelt_task_naming_the_valid_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["load", "experiments/smoke-dfl.yaml", "--out", "unused", "--task", "forge=1"])
    assert code == 2
    error = capsys.readouterr().err
    assert "no task 'forge'" in error and "unauthenticated" in error


def test_every_request_name_maps_back_to_its_task_and_expected_answer() -> None:
    for task, rpcs in REQUESTS.items():
        for rpc, expected in rpcs.items():
            name = request_name(task, rpc)
            assert split_name(name) == (task, rpc)
            assert expected_of(name) == expected
    assert split_name("Aggregated") == ("", "Aggregated")
    assert expected_of("Aggregated") is None
    assert expected_of("forged:nonsense") is None


def test_forged_kinds_expect_the_status_their_reject_reason_answers() -> None:
    assert str(FORGED_KINDS["bad_signature"]) == "UNAUTHENTICATED bad_signature"
    assert str(FORGED_KINDS["wrong_genesis"]) == "FAILED_PRECONDITION genesis_mismatch"
    assert str(FORGED_KINDS["wrong_shape"]) == "INVALID_ARGUMENT model_shape_mismatch"
    assert str(FORGED_KINDS["garbage"]) == "INVALID_ARGUMENT malformed"
    assert UNSIGNED.status == RejectReason.UNAUTHENTICATED.grpc_status


def test_the_node_label_is_read_from_its_details() -> None:
    assert reason_of("queue_full: 16 ML jobs are queued") == "queue_full"
    assert reason_of("banned: this connection is banned for 600 s") == "banned"
    assert reason_of("Socket closed") == ""
    assert reason_of("Deadline Exceeded") == ""


def test_a_valid_request_succeeds_only_when_served() -> None:
    assert verdict(SUCCEEDS, "OK", "") is None
    assert verdict(SUCCEEDS, "RESOURCE_EXHAUSTED", "queue_full: 16 ML jobs are queued") == (
        "RESOURCE_EXHAUSTED queue_full"
    )
    assert verdict(SUCCEEDS, "UNAVAILABLE", "Socket closed") == "UNAVAILABLE"


def test_a_forged_record_succeeds_only_when_refused_for_its_own_reason() -> None:
    expected = FORGED_KINDS["bad_signature"]
    details = "bad_signature: transaction signature does not verify"
    assert verdict(expected, "UNAUTHENTICATED", details) is None
    assert verdict(expected, "OK", "").startswith("ACCEPTED")
    # Refused, but for another reason: a failure that says what was expected.
    assert verdict(expected, "RESOURCE_EXHAUSTED", "queue_full: 16 ML jobs are queued") == (
        "RESOURCE_EXHAUSTED queue_full (expected UNAUTHENTICATED bad_signature)"
    )
    assert verdict(expected, "UNAUTHENTICATED", "unauthenticated: no signature") == (
        "UNAUTHENTICATED unauthenticated (expected UNAUTHENTICATED bad_signature)"
    )
