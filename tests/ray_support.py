"""Starting Ray in a test module: one process can hold one Ray runtime, and some modules (the buffer
tests) keep theirs for the whole session."""


def fresh_ray_init(**options: object) -> None:
    """`ray.init`, after shutting down a runtime an earlier module left up."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(**options)
