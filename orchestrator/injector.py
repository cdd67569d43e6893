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

from orchestrator.partition import SampleStream
from proto.dfl.v1 import node_pb2, node_pb2_grpc

log = logging.getLogger(__name__)

BATCHES_PER_SECOND = 4


def sample_batch(stream: SampleStream, count: int) -> node_pb2.SampleBatch:
    images, labels = stream.draw(count)
    return node_pb2.SampleBatch(
        samples=[
            node_pb2.Sample(pixels=image.tobytes(), label=int(label))
            for image, label in zip(images, labels, strict=True)
        ]
    )


async def inject(
    stub: node_pb2_grpc.NodeStub,
    stream: SampleStream,
    rate: float,
    stop: asyncio.Event,
    on_accepted: Callable[[int], None] | None = None,
) -> int:
    """Sends `rate` samples per second until `stop` is set; returns how many were accepted.

    `on_accepted` hears each batch's accepted count as it arrives (the exporter's counter).
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
                summary = await stub.InjectSamples(batches(), timeout=10.0)
                accepted += summary.accepted
                if on_accepted is not None:
                    on_accepted(summary.accepted)
            except grpc.aio.AioRpcError as error:
                log.debug("injection failed: %s", error.code().name)
        due += interval
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, due - loop.time()))
    return accepted
