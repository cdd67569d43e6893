"""Load tests: Locust against the nodes' real gRPC while an experiment runs (`dfl load`).

Locust runs in a process of its own: it patches the standard library for gevent when it starts,
and that must never meet the orchestrator's asyncio. So the orchestrator's side writes a plan
file, starts `locust` headless on the locustfile here and reads back the CSV files it leaves.

One job per module:

    tasks.py       the task names, their weights from the command line, the outcome each
                   request must have, and the `<task>:<rpc>` names Locust reports them under
    plan.py        the plan file: what the orchestrator tells the Locust process (nodes,
                   genesis, key file, weights), written by one side and read by the other
    records.py     what virtual peers and forgers send: validly signed transactions carrying
                   a perturbed copy of the node's model, and the four kinds of forged record
    scrape.py      the nodes' own counters from /metrics, before and after the load
    live.py        Locust's requests as they happen, counted in its process and exported by
                   the orchestrator's /metrics (dfl_load_*)
    steps.py       the step mode's rules: stages of users, their figures, limits, the knee
    stepshape.py   the step mode inside Locust (a LoadTestShape; loaded only with --step)
    runner.py      the orchestrator's side: the plan, the Locust process, the node figures;
                   `dfl load` hands it to the driver, which runs it beside the experiment
    locustfile.py  the Locust side: a User with an intercepted gRPC channel per node (imports
                   locust and gevent; only the Locust process imports it)
"""
