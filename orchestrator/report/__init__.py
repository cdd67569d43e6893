"""The run report: what a finished run directory shows, as Markdown, plots and summary.json.

One job per module, in the order the data flows:

    schema.py          what a run directory holds: file names and the records read back
    readers.py         load_run: a run directory into RunData, whatever a crashed node left
    summary.py         summarize: the key figures, once, for report.md and summary.json
    faults.py          what each fault of faults.jsonl did, from metrics.csv (in the summary)
    load.py            what a `dfl load` run's Locust files and node scrapes say (in the summary)
    cpu_table.py       the CPU tables' task rows and category columns (paper Table 6)
    table6.py          the CPU section: Table 6 with the paper's figures, the protocol's shares,
                       and all of the process's CPU (start-up, tasks, observe, remainder)
    cells.py           how a figure is printed in Markdown (shared with `dfl compare`)
    markdown.py        report.md, section by section
    markdown_chain.py  its blockchain sections: DFL's Table 7, BLADE-FL's mining and lazy clients
    markdown_faults.py its Faults section, for a run with a faults.jsonl
    markdown_load.py   its Load section, for a `dfl load` run
    plots.py           plots/*.png (matplotlib, imported only to draw)
    render.py          render_report: writes report.md, plots/*.png and summary.json

The views follow the paper (section 5.1): accuracy per node over time (Figure 8), CPU seconds by
task and category (Table 6) and blockchain statistics (Table 7). The names re-exported here are
what the CLI and the tests use; other modules import from the module that defines a name.
"""

from orchestrator.report.readers import NotARunDirectory, load_run
from orchestrator.report.render import render_report
from orchestrator.report.schema import SUMMARY_FILE, RunData
from orchestrator.report.summary import (
    FINAL_WINDOW_S,
    NodeSummary,
    RunSummary,
    final_window,
    summarize,
)

__all__ = [
    "FINAL_WINDOW_S",
    "SUMMARY_FILE",
    "NodeSummary",
    "NotARunDirectory",
    "RunData",
    "RunSummary",
    "final_window",
    "load_run",
    "render_report",
    "summarize",
]
