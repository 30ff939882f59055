"""The driver of `tandem train`: wires the reward server, buffer, learner and generator actors together
and writes the run directory (resolved config, metrics, eval, TensorBoard, reward curve, checkpoints)."""
