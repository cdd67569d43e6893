"""The chain a node's data directory holds: created on first start, continued on a restart,
refused when it belongs to another experiment or another key (a mistake the node must not
paper over by starting a new chain beside the old one)."""

from __future__ import annotations

from node.datadir import STORE_FILE
from node.ledger.keys import NodeKey
from node.ledger.store import ChainStore
from node.service.config import NodeConfig
from proto.dfl.v1 import records_pb2

__all__ = ["DataDirectoryError", "open_chain"]


class DataDirectoryError(Exception):
    """The data directory belongs to another experiment or another node."""


def open_chain(config: NodeConfig, key: NodeKey, genesis: records_pb2.Genesis) -> ChainStore:
    """The node's chain, verified; a restart continues it, another experiment's is refused."""
    if not (config.data_dir / STORE_FILE).exists():
        return ChainStore.create(config.data_dir, genesis, key.address)
    store = ChainStore.open(config.data_dir)
    if store.genesis.digest != genesis.digest:
        store.close()
        raise DataDirectoryError(
            f"{config.data_dir} holds a chain of another experiment (genesis differs); "
            "use a fresh --data-dir"
        )
    if store.owner != key.address:
        store.close()
        raise DataDirectoryError(f"{config.data_dir}: the chain belongs to another key")
    return store
