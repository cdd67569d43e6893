"""The simulator's network: MemoryNetwork plus batching, virtual ML time and a CPU account.

Three things differ from the plain in-memory network the engines' tests use:

- Evaluations are deferred to the end of the instant: every Evaluate of one instant (all nodes,
  all models) is collected and run as one batch when the clock is about to move, and the results
  go back to the engines at that same instant (the paper's simulator has no ML delay either).
  The simulation draws one test sample per node per batch, shared by the models the node tests
  at that instant, as the paper's nodes test a full buffer on one draw.
- BLADE-FL's local training is deferred the same way, so that the clients of a round train
  together (stacked), and it takes virtual time: `epoch_time` (alpha) per local epoch.
- Every engine call and every piece of ML work is charged to the CPU profiler a node uses,
  by category, so a run reports the chain's share of the CPU the way a node does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.protocol import blade
from node.protocol.dfl import (
    Action,
    Aggregate,
    Evaluate,
    EvaluationDone,
    Event,
    PersistBlock,
    Train,
    TrainingDone,
)
from node.service.profiler import Profiler
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode


@dataclass(frozen=True)
class PendingEvaluation:
    node: MemoryNode
    action: Evaluate


@dataclass(frozen=True)
class PendingTraining:
    node: MemoryNode
    action: blade.TrainLocal


# evaluate(pending) -> one accuracy per pending evaluation, in order
BatchEvaluate = Callable[[Sequence[PendingEvaluation]], Sequence[float]]
# train(pending) -> one model (f32le bytes) per pending training, in order
BatchTrain = Callable[[Sequence[PendingTraining]], Sequence[bytes]]

_TASKS = {
    TrainingDone: "generate_transaction",
    EvaluationDone: "receive_transaction",
}


class SimNetwork(MemoryNetwork):
    def __init__(
        self,
        *,
        evaluate: BatchEvaluate | None = None,
        train: BatchTrain | None = None,
        epoch_time: float = 0.0,
        latency: float = 0.001,
        tick_interval: float = 1.0,
        hash_rate: float = 1e4,
    ) -> None:
        super().__init__(latency=latency, tick_interval=tick_interval, hash_rate=hash_rate)
        self.profiler = Profiler()
        self.batch_evaluate = evaluate
        self.batch_train = train
        self.epoch_time = epoch_time
        self.evaluations: list[PendingEvaluation] = []
        self.trainings: list[PendingTraining] = []
        self.evaluation_batches = 0

    def settle(self) -> bool:
        if self.evaluations:
            pending, self.evaluations = self.evaluations, []
            assert self.batch_evaluate is not None
            with self.profiler.measure("receive_transaction", "ml"):
                accuracies = self.batch_evaluate(pending)
            self.evaluation_batches += 1
            for item, accuracy in zip(pending, accuracies, strict=True):
                done = EvaluationDone(item.action.transaction_digest, accuracy)
                self._handle(item.node, done)
            return True
        if self.trainings:
            pending_trainings, self.trainings = self.trainings, []
            assert self.batch_train is not None
            with self.profiler.measure("train", "ml"):
                models = self.batch_train(pending_trainings)
            for item, model in zip(pending_trainings, models, strict=True):
                ready = blade.LocalModelReady(item.action.round, model)
                at = self.now + item.action.iterations * self.epoch_time
                self.schedule(at, item.node.name, ready)
            return True
        return False

    def _engine_actions(self, node: MemoryNode, event: Event) -> list[Action]:
        with self.profiler.measure(_TASKS.get(type(event), "other"), "blockchain"):
            return super()._engine_actions(node, event)

    def _carry_out(self, node: MemoryNode, action: Action) -> None:
        match action:
            case Train():
                with self.profiler.measure("generate_transaction", "ml"):
                    super()._carry_out(node, action)
            case Aggregate():
                with self.profiler.measure("update_model", "ml"):
                    super()._carry_out(node, action)
            case PersistBlock() | blade.PersistPowBlock():
                with self.profiler.measure("generate_block", "blockchain"):
                    super()._carry_out(node, action)
            case blade.Mine():
                with self.profiler.measure("mine", "blockchain"):
                    super()._carry_out(node, action)
            case _:
                super()._carry_out(node, action)

    def _evaluate(self, node: MemoryNode, action: Evaluate) -> None:
        if self.batch_evaluate is None:
            super()._evaluate(node, action)
        else:
            self.evaluations.append(PendingEvaluation(node, action))

    def _train_local(self, node: MemoryNode, action: blade.TrainLocal) -> None:
        if self.batch_train is None:
            super()._train_local(node, action)
        else:
            self.trainings.append(PendingTraining(node, action))
