"""Parsing what operators type: ``k=v`` parameters, durations, moments, files of device ids; and
reading files of any size a row at a time (CSV, lines, a JSON array streamed item by item)."""

from __future__ import annotations

import contextlib
import csv
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from cli.errors import UsageProblem
from models.jobs import MAX_LISTED_ENTITIES

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


def device_ids(path: Path, limit: int = MAX_LISTED_ENTITIES) -> list[str]:
    """Device ids from a file: a JSON array (of ids, or of objects with ``id``), a CSV with an
    ``id`` column, or one id per line (blank lines and ``#`` comments skipped). Read a row at a
    time and refused past ``limit`` ids (a job lists at most 10,000 devices), so a huge file
    costs no memory."""
    ids: list[str] = []
    with text_file(path) as stream:
        for value in _ids(stream, path):
            if len(ids) == limit:
                raise UsageProblem(
                    f"{path} lists more than {limit} devices: a job lists at most {limit} "
                    "(target larger fleets by tag)"
                )
            ids.append(value)
    return ids


def _ids(stream: TextIO, path: Path) -> Iterator[str]:
    first = first_char(stream)
    if first == "[":
        for item in JsonStream(stream, path).items():
            value = item.get("id") if isinstance(item, dict) else item
            if not isinstance(value, str):
                raise UsageProblem(f"{path}: each item must be an id or an object with an id")
            yield value
        return
    header = stream.readline(MAX_LINE)
    stream.seek(0)
    if "," in header and "id" in [c.strip() for c in header.split(",")]:
        for row in csv.DictReader(stream):
            if (row.get("id") or "").strip():
                yield row["id"].strip()
        return
    while line := stream.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith("\n"):
            raise UsageProblem(f"{path}: a line longer than {MAX_LINE} characters is no id")
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


# -- files of any size ----------------------------------------------------------------------------

CHUNK = 1 << 16
MAX_LINE = 4096


@contextlib.contextmanager
def text_file(path: Path) -> Iterator[TextIO]:
    """``path`` open as UTF-8 text (a BOM skipped) for reading a row at a time; a failure to read
    or decode it, or a CSV error, at any row is a ``UsageProblem`` naming the file."""
    try:
        stream = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise UsageProblem(f"cannot read {path}: {exc}") from exc
    with stream:
        try:
            yield stream
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise UsageProblem(f"cannot read {path}: {exc}") from exc


@contextlib.contextmanager
def regular_file(path: Path) -> Iterator[Path]:
    """``path`` itself when it is a regular file, else (a pipe, ``/dev/stdin``) a temporary copy
    of it: readers that check a file before sending it read it twice."""
    if path.is_file() or not path.exists():
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="fleetops-") as directory:
        copy = Path(directory) / path.name
        try:
            with path.open("rb") as source, copy.open("wb") as target:
                shutil.copyfileobj(source, target, CHUNK)
        except OSError as exc:
            raise UsageProblem(f"cannot read {path}: {exc}") from exc
        yield copy


def first_char(stream: TextIO) -> str:
    """The first character of ``stream`` that is not white space ("" for none); the stream is
    put back at its start."""
    found = ""
    while chunk := stream.read(CHUNK):
        stripped = chunk.lstrip()
        if stripped:
            found = stripped[0]
            break
    stream.seek(0)
    return found


class JsonStream:
    """The items of a JSON array read from a stream one at a time, holding one item (and a
    buffer) in memory, never the whole document: the array at the top, or under ``key`` in an
    object at the top (``{"devices": [...]}``)."""

    def __init__(self, stream: TextIO, path: Path) -> None:
        self.stream = stream
        self.path = path
        self.buffer = ""
        self.pos = 0
        self.eof = False
        self.decoder = json.JSONDecoder()

    def items(self, key: str | None = None) -> Iterator[Any]:
        start = self._peek()
        if start == "[":
            yield from self._array()
        elif start == "{" and key is not None:
            yield from self._member(key)
        else:
            where = f'a JSON array, or {{"{key}": [...]}}' if key else "a JSON array"
            raise UsageProblem(f"{self.path}: give {where}")
        if self._peek():
            raise self._invalid("unexpected data after the JSON document")

    def _array(self) -> Iterator[Any]:
        self._take("[")
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            yield self._value()
            if self._peek() == "]":
                self.pos += 1
                return
            self._take(",")

    def _member(self, key: str) -> Iterator[Any]:
        self._take("{")
        found = False
        while self._peek() != "}":
            name = self._value()
            if not isinstance(name, str):
                raise self._invalid("an object key must be a string")
            self._take(":")
            if name == key and not found and self._peek() == "[":
                found = True
                yield from self._array()
            else:
                self._value()  # another member: read and dropped
            if self._peek() == "}":
                break
            self._take(",")
            if self._peek() == "}":
                raise self._invalid("a comma before '}'")
        self.pos += 1
        if not found:
            raise UsageProblem(f'{self.path}: give a JSON array, or {{"{key}": [...]}}')

    def _fill(self, size: int = CHUNK) -> bool:
        """Read more of the stream into the buffer (dropping what was consumed)."""
        if self.eof:
            return False
        chunk = self.stream.read(size)
        if not chunk:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def _peek(self) -> str:
        """The next character that is not white space, not consumed ("" at the end)."""
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self._fill():
                return ""

    def _take(self, expected: str) -> None:
        if self._peek() != expected:
            raise self._invalid(f"expected {expected!r}")
        self.pos += 1

    def _value(self) -> Any:
        self._peek()
        size = CHUNK
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                if self._fill(size):  # cut off by the end of the buffer: read more
                    size *= 2
                    continue
                raise self._invalid(exc.msg) from exc
            # A number at the very end of the buffer may go on in the next chunk.
            if end == len(self.buffer) and self._fill(size):
                continue
            self.pos = end
            return value

    def _invalid(self, what: str) -> UsageProblem:
        return UsageProblem(f"{self.path} is not valid JSON: {what}")


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
