"""The job workflow and the per-device operation workflow."""
