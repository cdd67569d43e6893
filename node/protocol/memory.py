"""Bounded memory with expiry, for "have I seen this digest" questions.

A node must drop duplicates without remembering every digest forever: entries leave when the
record they describe expires (after which it is rejected as expired anyway) or, when the memory is
full, oldest first. Time is whatever the caller passes; nothing here reads a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class ExpiringMemory(Generic[K, V]):
    capacity: int
    _entries: OrderedDict[K, tuple[float, V]] = field(default_factory=OrderedDict)
    evictions: int = 0

    def put(self, key: K, value: V, expires_at: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (expires_at, value)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evictions += 1

    def get(self, key: K, now: float) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            return None
        return entry[1]

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[1]

    def contains(self, key: K, now: float) -> bool:
        return self.get(key, now) is not None

    def purge(self, now: float) -> int:
        """Forgets expired entries; returns how many."""
        expired = [key for key, (expires_at, _) in self._entries.items() if expires_at <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)
