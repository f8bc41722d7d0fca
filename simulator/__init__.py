"""A fleet of simulated devices behind one real HTTP server (SPEC 4.1, device side)."""
