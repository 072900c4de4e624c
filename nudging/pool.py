"""One pool of lanes for every place that runs several generations at once: `Nudger.generate_batch`, `nudging
eval --concurrency` and `nudging serve --max-concurrency`.

A pool of size n holds n lanes of one Nudger (`Nudger.lanes`: local models run their forward passes together,
nudging.backends.batch); a pool of size 1 holds one replica. Each lane runs one generation at a time.
"""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, Protocol, Sequence, TypeVar

from nudging.errors import InvalidArgumentError

L = TypeVar("L", bound="HasLanes")
X = TypeVar("X")
R = TypeVar("R")


class HasLanes(Protocol):
    def lanes(self, count: int) -> list: ...
    def replica(self): ...


class LanePool(Generic[L]):
    """`size` lanes of `source` (or the `lanes` given), lent one generation at a time."""

    def __init__(self, source: L, size: int, lanes: Sequence[L] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InvalidArgumentError(f"a pool of lanes needs a size of at least 1, got {size!r}")
        self.lanes: list[L] = list(lanes) if lanes else (source.lanes(size) if size > 1 else [source.replica()])
        self._free: queue.Queue[L] = queue.Queue()
        for lane in self.lanes:
            self._free.put(lane)

    @property
    def size(self) -> int:
        return len(self.lanes)

    @contextmanager
    def lane(self) -> Iterator[L]:
        """A free lane for one generation (waits for one), given back afterwards."""
        lane = self._free.get()
        try:
            yield lane
        finally:
            self._free.put(lane)

    def imap(self, items: Sequence[X], work: Callable[[L, X], R]) -> Iterator[tuple[int, R]]:
        """(index, work(lane, item)) for every item, as each one finishes; as many at once as there are lanes.
        An error stops the items not yet started and is raised here, after the results that came before it."""
        finished: queue.Queue = queue.Queue()
        indices = iter(range(len(items)))
        lock = threading.Lock()
        stop = threading.Event()
        end = object()

        def worker() -> None:
            try:
                with self.lane() as lane:
                    while not stop.is_set():
                        with lock:
                            index = next(indices, None)
                        if index is None:
                            return
                        try:
                            finished.put((index, work(lane, items[index]), None))
                        except BaseException as error:  # reaches the caller, in its own thread
                            stop.set()
                            finished.put((index, None, error))
                            return
            finally:
                finished.put(end)

        threads = [threading.Thread(target=worker, name="nudging-lane", daemon=True)
                   for _ in range(min(self.size, len(items)))]
        for thread in threads:
            thread.start()
        running = len(threads)
        try:
            while running:
                item = finished.get()
                if item is end:
                    running -= 1
                    continue
                index, result, error = item
                if error is not None:
                    raise error
                yield index, result
        finally:
            stop.set()
            for thread in threads:
                thread.join()
