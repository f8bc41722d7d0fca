"""Replay recorded histories against today's workflow code: a change that would break running
jobs fails here (record them again with ``python -m tests.record_histories`` only on purpose)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.temporal import data_converter
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEXTS = {path: path.read_text() for path in HISTORIES}


def test_histories_are_recorded() -> None:
    names = {p.name for p in HISTORIES}
    assert "job.json" in names
    assert sum(n.startswith("operation-") for n in names) >= 4


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, TEXTS[path])
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter)
    await replayer.replay_workflow(history)
