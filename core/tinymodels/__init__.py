"""Tiny models built from nothing (no model hub is reachable): tokenizer, tasks, policy, reward model."""
