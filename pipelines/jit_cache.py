"""UMAP's compiled code kept on disk, so a topics run does not spend half a minute compiling it.

UMAP and pynndescent compile a few hundred numba functions on first use, and most are declared without
``cache=True``: every topics run recompiled them (measured on 915 verbatims: 31 s of a 47 s fit). ``enable`` turns
numba's own on-disk cache on for them (the same machine code, so the same results); ``make setup`` runs ``warm``
once, so even a fresh project's first run loads the code instead of compiling it.

    python -m pipelines.jit_cache     # what `make setup` runs
"""

from __future__ import annotations

import sys
import time

PACKAGES = ("umap", "pynndescent")


def enable(packages: tuple[str, ...] = PACKAGES) -> int:
    """Turn numba's disk cache on for every not-yet-cached compiled function of ``packages`` (imported modules)."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    enabled = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for obj in list(vars(module).values()):
            if isinstance(obj, Dispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                obj.enable_caching()
                enabled += 1
    return enabled


def warm(n: int = 600, dim: int = 64) -> float:
    """Fit and apply UMAP as the topics stage configures it, on random vectors: compiles and stores its code."""
    import numpy as np
    from umap import UMAP

    from pipelines.schema import TopicsParams

    enable()
    params = TopicsParams()
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    t0 = time.perf_counter()
    reducer = UMAP(n_neighbors=params.umap_neighbors, n_components=params.umap_components, min_dist=0.0,
                   metric="cosine", random_state=params.seed)
    reducer.fit(x)
    reducer.transform(x[:50])
    return time.perf_counter() - t0


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    print(f"koe: UMAP's compiled code cached ({warm():.1f} s)")
