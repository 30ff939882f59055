"""HTTP routers of the reward server, one module per concern."""
