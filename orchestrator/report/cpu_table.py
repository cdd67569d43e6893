"""The CPU tables' rows and columns: tasks in the paper's order (Table 6), categories as columns.

The task and category names are the profiler's (node/datadir.py); only their order and labels
are the report's. The summary, the Markdown, the plots and `dfl compare` all lay CPU seconds out
through here, so a task or category shows in the same place everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from node.datadir import CATEGORIES, TASKS

# DFL's tasks as the paper's Table 6 lists them; the profiler's other tasks (BLADE-FL's, then
# "other") follow in its own order.
TABLE6_TASKS = ("generate_block", "generate_transaction", "update_model", "receive_transaction")
TASK_ORDER = (*TABLE6_TASKS, *(task for task in TASKS if task not in TABLE6_TASKS))
TASK_LABELS = {
    "generate_block": "generate block",
    "generate_transaction": "generate transaction",
    "update_model": "update model",
    "receive_transaction": "receive transactions",
    "verify_block": "verify block",
}


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
