"""Keep the garbage collector off the objects a long-lived process made while starting up.

torch, vLLM, Ray and a model leave a few hundred thousand container objects behind at start-up, and
every full collection walks all of them: 100-250 ms here, long enough to show up as a stalled buffer
put or a slow generation step (benchmarks/actors_bench.py, buffer_bench.py). Freezing moves them to a
permanent generation that collections skip; objects made afterwards are collected as usual. vLLM's
engine core does the same once it is up (`freeze_gc_heap`).
"""

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left as garbage, then exempt the survivors from future collections."""
    gc.collect()
    gc.freeze()
