"""Pieces shared by the API, the worker and the tools: settings and the Temporal client."""
