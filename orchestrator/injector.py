"""The injector: streams a node's samples to it at the experiment's rate.

Samples go in small batches four times a second on a fixed schedule (not "sleep after each
send"), so the rate holds even when a send is slow; a node that is down is retried until it
comes back, and the samples meant for it meanwhile are dropped, as a sensor's would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc
import numpy as np

from node.host.samples import Batch, DrawsSamples
from node.service.control import Metadata
from orchestrator.datasets import Dataset
from orchestrator.partition import Partition
from orchestrator.spec import ExperimentSpec
from proto.dfl.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

BATCHES_PER_SECOND = 4


class LocalDatasetFirst:
    """A BLADE-FL (or FedAvg) client's samples: its fixed local dataset (disjoint from every other
    client's, as the simulator hands out), then its stream, which fills its test shard."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, then: DrawsSamples) -> None:
        self._images, self._labels, self._then = images, labels, then
        self._given = 0

    def draw(self, n: int) -> Batch:
        first = slice(self._given, min(self._given + n, len(self._labels)))
        self._given = first.stop
        images, labels = self._images[first], self._labels[first]
        if len(labels) == n:
            return images, labels
        more_images, more_labels = self._then.draw(n - len(labels))
        return np.concatenate([images, more_images]), np.concatenate([labels, more_labels])


def training_samples(spec: ExperimentSpec, dataset: Dataset) -> list[DrawsSamples]:
    """What the orchestrator injects into each node, in order: the samples the simulator gives
    the same node of the same spec."""
    partition = Partition.build(spec.partition(), spec.nodes.count, dataset.train_labels, spec.seed)
    images, labels = dataset.train_images, dataset.train_labels
    streams = [partition.stream(index, images, labels) for index in range(spec.nodes.count)]
    section = spec.blade or spec.fedavg  # the protocols whose clients keep a local dataset
    if section is None:
        return streams
    local = partition.local_datasets(labels, section.dataset_size)
    return [
        LocalDatasetFirst(images[picks], labels[picks], stream)
        for picks, stream in zip(local, streams, strict=True)
    ]


def sample_batch(stream: DrawsSamples, count: int) -> node_pb2.SampleBatch:
    images, labels = stream.draw(count)
    return node_pb2.SampleBatch(
        samples=[
            node_pb2.Sample(pixels=image.tobytes(), label=int(label))
            for image, label in zip(images, labels, strict=True)
        ]
    )


async def inject(
    stub: node_pb2_grpc.NodeStub,
    stream: DrawsSamples,
    rate: float,
    stop: asyncio.Event,
    metadata: Callable[[], Metadata],
    on_accepted: Callable[[int], None] | None = None,
) -> int:
    """Sends `rate` samples per second until `stop` is set; returns how many were accepted.

    `metadata` makes each call's control signature (node/service/control.py); `on_accepted`
    hears each batch's accepted count as it arrives (the exporter's counter).
    """
    loop = asyncio.get_running_loop()
    interval = 1.0 / BATCHES_PER_SECOND
    due, owed, accepted = loop.time(), 0.0, 0
    while not stop.is_set():
        owed += rate * interval
        count = int(owed)
        owed -= count

        async def batches(count: int = count):
            if count:
                yield sample_batch(stream, count)

        if count:
            try:
                summary = await stub.InjectSamples(batches(), timeout=10.0, metadata=metadata())
                accepted += summary.accepted
                if on_accepted is not None:
                    on_accepted(summary.accepted)
            except grpc.aio.AioRpcError as error:
                log.debug("injection failed: %s", error.code().name)
        due += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, due - loop.time()))
    return accepted
