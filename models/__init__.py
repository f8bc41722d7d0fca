"""The SPEC's JSON as pydantic models, shared by the API, the workflows and the activities."""
