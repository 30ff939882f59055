"""The reward role: a FastAPI service that scores completions with configured, weighted scorers."""
