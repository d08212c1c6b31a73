"""The CFM estimator's rows side by side on the CPU: each row of a batch (the conditional and unconditional rows of
classifier-free guidance, and every request of a padded batch) runs on its own worker thread with its share of
the cores, instead of the whole batch running op by op across all of them.

A forward of a few thousand operators parallelised op by op meets a barrier at the end of each: on a shared
two-core machine one core briefly taken away stalls the other at every one. Rows on their own cores meet only
once a pass. Measured on two cores (AVX512-BF16, `cpu-bf16`, one estimator pass over the CFG pair at 600
frames): 0.89-1.05 s op by op on two threads, 0.78-0.81 s as two rows on one thread each (docs/cpu.md).

Each row alone also makes a row's result independent of what shares its batch: the int8 projections quantise
their input per call, per tensor, so a batched call scaled every row by the batch's largest value."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn


class RowWorkers:
    """`workers` threads that each compute with `threads_each` intra-op threads, leaving the calling thread's
    count (and the count new threads start with) as they were."""

    def __init__(self, workers: int, threads_each: int):
        if workers < 1 or threads_each < 1:
            raise ValueError(f"row workers need at least one worker and one thread each, got {workers} and "
                             f"{threads_each}")
        self.workers, self.threads_each = workers, threads_each
        caller_threads = torch.get_num_threads()
        ready = threading.Barrier(workers)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cadence-rows")
        for f in [self.pool.submit(self._start, ready) for _ in range(workers)]:
            f.result()
        # PyTorch keeps one process-wide count that threads read when they first compute; the workers' call set it
        torch.set_num_threads(caller_threads)

    def _start(self, ready: threading.Barrier) -> None:
        ready.wait()  # every worker thread exists before any returns (the pool makes one per waiting task)
        torch.get_num_threads()  # this thread's first read of the count: later it would overwrite what we set
        torch.set_num_threads(self.threads_each)  # OpenMP's count is per thread: the caller's is untouched

    def map(self, fn, items: list) -> list:
        """[fn(item) for item in items], on the workers, under the caller's grad mode."""
        inference = torch.is_inference_mode_enabled()

        def run(item):
            with torch.inference_mode(inference):
                return fn(item)
        return list(self.pool.map(run, items))

    def threads(self) -> list[int]:
        """Each worker's intra-op thread count (what the tests check)."""
        ready = threading.Barrier(self.workers)

        def count(_):
            ready.wait()  # one task per worker
            return torch.get_num_threads()
        return list(self.pool.map(count, range(self.workers)))


def rows_side_by_side(forward, workers: RowWorkers):
    """The estimator's `forward(x, mask, mu, t, spks, cond, r=None)` computed one row per worker task: the same
    arguments (B rows each) -> the rows' results concatenated. A batch of one row runs on the caller."""

    def run(x, mask, mu, t, spks, cond, r=None):
        if x.shape[0] == 1:
            return forward(x, mask, mu, t, spks, cond, r)

        def row(i):
            one = slice(i, i + 1)
            return forward(x[one], mask[one], mu[one], t[one], spks[one], cond[one], None if r is None else r[one])
        return torch.cat(workers.map(row, list(range(x.shape[0]))))
    return run


_shared: dict[tuple[int, int], RowWorkers] = {}
_shared_lock = threading.Lock()


def shared_workers(workers: int, threads_each: int) -> RowWorkers:
    """One set of workers per shape for the whole process: every model loaded in it shares them."""
    with _shared_lock:
        if (workers, threads_each) not in _shared:
            _shared[workers, threads_each] = RowWorkers(workers, threads_each)
        return _shared[workers, threads_each]


def estimator_rows_side_by_side_(module: nn.Module, threads: int) -> int:
    """The transform: every CFM estimator in `module` computes each row of a batch on its own worker, two workers
    with half of `threads` each (the CFG pair's two rows at once); -> how many estimators. Nothing where
    `threads` < 2 leaves nothing to share out."""
    from ..models.s3gen.estimator import ConditionalDecoder
    if threads < 2:
        return 0
    workers = shared_workers(2, threads // 2)
    estimators = [m for m in module.modules() if isinstance(m, ConditionalDecoder)]
    for estimator in estimators:
        estimator.forward = rows_side_by_side(estimator.forward, workers)
    return len(estimators)
