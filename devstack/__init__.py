"""The embedded stack on one machine (SPEC 5): ``python -m devstack run [--devices 200]``.

Starts the Temporal development server (SQLite under ``.data/``), the worker, the API and the
device simulator as child processes, provisions the simulated fleet, runs a demo job, and stops
everything cleanly on Ctrl-C.

``processes`` is the one process supervisor (children in their own process groups with log
files, ``eventually``, ``find_binary``, ``free_port``) and ``dev_server`` the one
``temporal server start-dev`` command line: ``make run``, the benches (``bench.harness``) and the
test fixtures (``tests/stack.py``) all start their processes through them.
"""
