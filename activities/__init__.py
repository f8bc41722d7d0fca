"""Activities, grouped by the outside system they touch."""
