"""The top floor of Tandem: what composes the roles into running services.

`orchestration/` (the driver, supervisor, run files, best/ export, progress, Prometheus), `cli/` (the
`tandem` command) and `embedded_server.py` (the reward server in a thread for the embedded default).
Imports `core/` and the roles; nothing below imports this package.
"""
