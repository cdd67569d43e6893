"""The CPU tables' rows and columns: tasks in the paper's order (Table 6), categories as columns.

The task and category names are the profiler's (node/datadir.py); only their order and labels
are the report's. The summary, the Markdown, the plots and `dfl compare` all lay CPU seconds out
through here, so a task or category shows in the same place everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from node.datadir import CATEGORIES, TASKS

# DFL's tasks as the paper's Table 6 lists them; the profiler's other protocol tasks (BLADE-FL's)
# follow in its own order, then the tasks that are not the protocol's.
TABLE6_TASKS = ("generate_block", "generate_transaction", "update_model", "receive_transaction")
# Not the protocol's work: "observe" is what a node does for the testbed (the orchestrator's model
# fetches, status, metrics, sample injection, the idle event loop), "other" the rest (peer
# changes, checkpoints). The paper's Table 6 has neither, so the protocol shares leave them out.
NON_PROTOCOL_TASKS = ("observe", "other")
TASK_ORDER = (
    *TABLE6_TASKS,
    *(task for task in TASKS if task not in TABLE6_TASKS and task not in NON_PROTOCOL_TASKS),
    *NON_PROTOCOL_TASKS,
)
TASK_LABELS = {
    "generate_block": "generate block",
    "generate_transaction": "generate transaction",
    "update_model": "update model",
    "receive_transaction": "receive transactions",
    "verify_block": "verify block",
    "aggregate": "aggregate (FedAvg)",
    "observe": "observe (testbed)",
}


def is_protocol_task(task: str) -> bool:
    """Whether a task's CPU counts in the protocol shares: every task but observe and other, so
    that a task a newer node adds counts as the protocol's until it is named here."""
    return task not in NON_PROTOCOL_TASKS


def task_rows(tasks: Iterable[str]) -> list[str]:
    """The tasks present, in TASK_ORDER; a task the order does not know follows alphabetically,
    so that a profile from a newer node is still shown in full."""
    return _ordered(tasks, TASK_ORDER)


def category_columns(categories: Iterable[str]) -> list[str]:
    """Always the profiler's (the paper's) three categories, so that a node without network CPU
    shows a 0 rather than a missing column, then any other present, alphabetically."""
    return _ordered([*CATEGORIES, *categories], CATEGORIES)


def _ordered(names: Iterable[str], order: Sequence[str]) -> list[str]:
    present = set(names)
    return [n for n in order if n in present] + sorted(present - set(order))
