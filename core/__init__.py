"""The ground floor of Tandem: the contracts every role stands on.

`config/` (the one config tree), `schemas.py` (the wire records), `buffer/` (the experience buffer),
`weight_sync/` (weight transports), `prompts/` (prompt sources), `tinymodels/` (the project's own tiny
models) and small helpers. The roles (`learner/`, `actors/`, `reward_server/`) import from here and never
from each other; nothing here imports a role or `services/`.
"""
