"""The inventory: provisioned devices, their tags, and API keys (SQLAlchemy 2, async)."""
