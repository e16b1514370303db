"""The chunk pipelines shared by capture, restore and verify.

A region of a device (a partition, the head of a disk) is cut into the fixed
chunk grid; a bounded pool of threads hashes, compresses and stores, or
fetches, checks and writes, chunks while the caller's thread keeps the
order. hashlib, zstandard and os.pread/pwrite release the GIL, so two cores
are both used. At most ``inflight`` chunks are held in memory at once.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")

WORKERS = max(2, min(4, os.cpu_count() or 2))
# A restore's job waits on the repository (a file read, an HTTP request) and
# then on the target's O_DIRECT write about as long as it computes, so twice
# as many jobs as cores keep the CPU busy and several requests in flight
# (make bench, 2 cores: restore over HTTP about 25% faster than with 2 jobs).
RESTORE_WORKERS = 2 * WORKERS


class Pipeline(Generic[T]):
    """Run jobs on a thread pool with a bound on jobs in flight; results in order."""

    def __init__(self, pool: ThreadPoolExecutor, inflight: int) -> None:
        self.pool = pool
        self.inflight = inflight
        self.pending: deque[Future[T]] = deque()

    def submit(self, fn: Callable[..., T], *args: object) -> list[T]:
        """Queue one job; returns, in order, the results of the oldest jobs
        that had to finish to make room."""
        self.pending.append(self.pool.submit(fn, *args))
        done = []
        while len(self.pending) > self.inflight:
            done.append(self.pending.popleft().result())
        return done

    def drain(self) -> list[T]:
        done = []
        while self.pending:
            done.append(self.pending.popleft().result())
        return done

    def cancel(self) -> None:
        for fut in self.pending:
            fut.cancel()
        for fut in self.pending:
            if not fut.cancelled():
                try:
                    fut.result()
                except BaseException:
                    pass
        self.pending.clear()


@contextmanager
def pipeline(result: type[T], workers: int = WORKERS) -> Iterator[Pipeline[T]]:
    """``result`` is the type the jobs return (for the type checker)."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liferaft-chunk") as pool:
        pipe: Pipeline[T] = Pipeline(pool, workers * 2)
        try:
            yield pipe
        except BaseException:
            pipe.cancel()
            raise
