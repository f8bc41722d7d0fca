"""The REST facade: north (operators) and south (devices) of the SPEC, over Temporal."""
