"""The embedded stack on one machine (SPEC 5): ``python -m devstack run [--devices 200]``.

Starts the Temporal development server (SQLite under ``.data/``), the worker, the API and the
device simulator as child processes, provisions the simulated fleet, runs a demo job, and stops
everything cleanly on Ctrl-C.
"""
