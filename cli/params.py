"""Parsing what operators type: ``k=v`` parameters, durations, moments, files of device ids."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from cli.errors import UsageProblem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parameter(text: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON when it parses (``3``, ``true``, ``[1,2]``,
    ``{"a":1}``, ``"quoted"``), otherwise as the string it is."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageProblem(f"--param takes key=value, not {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def parameters(pairs: list[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    found = dict(base or {})
    for pair in pairs:
        key, value = parameter(pair)
        found[key] = value
    return found


def millis(text: str, option: str) -> int:
    """A duration as integer milliseconds: ``1500`` (ms), ``1500ms``, ``30s``, ``10m``, ``2h``,
    ``1d``."""
    match = _DURATION.match(text)
    if not match:
        raise UsageProblem(
            f"{option} takes a duration such as 1500ms, 30s, 10m, 2h or 1d, not {text!r}"
        )
    amount, unit = float(match.group(1)), match.group(2) or "ms"
    return round(amount * _UNIT_MS[unit])


def moment(text: str, option: str) -> dict[str, Any]:
    """A job's start or stop: ``now`` (``{}``, start only), a duration from now
    (``{"delayed": ms}``), or an ISO 8601 date with a time zone (``{"date": ...}``)."""
    if text.strip().lower() == "now":
        return {}
    if _DURATION.match(text):
        return {"delayed": millis(text, option)}
    return {"date": text.strip()}


def device_ids(path: Path) -> list[str]:
    """Device ids from a file: a JSON array (of ids, or of objects with ``id``), a CSV with an
    ``id`` column, or one id per line (blank lines and ``#`` comments skipped)."""
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _json_ids(text, path)
    first = stripped.splitlines()[0] if stripped else ""
    if "," in first and "id" in [c.strip() for c in first.split(",")]:
        return [row["id"].strip() for row in csv.DictReader(io.StringIO(stripped)) if row.get("id")]
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _json_ids(text: str, path: Path) -> list[str]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise UsageProblem(f"{path} is not valid JSON: {exc}") from exc
    ids = []
    for item in items:
        value = item.get("id") if isinstance(item, dict) else item
        if not isinstance(value, str):
            raise UsageProblem(f"{path}: each item must be an id or an object with an id")
        ids.append(value)
    return ids


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from exc


def json_file(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except ValueError as exc:
        raise UsageProblem(f"{path} is not valid JSON: {exc}") from exc
