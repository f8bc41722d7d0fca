"""``fleetops``: the operators' command line, a client of the north API (docs/cli.md)."""
