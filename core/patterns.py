"""The regular expressions of JSON-Schemas that API clients write, evaluated in linear time.

JSON-Schema's ``pattern`` is an ECMA 262 regular expression searched anywhere in the string.
Python's ``re`` backtracks (``^(a+)+$`` takes seconds on 30 characters), so patterns run on RE2:
linear in the text, no backreferences or lookaround (such a pattern is refused, with why). Where
ECMA and RE2 spell the same thing differently, the pattern is translated first, so it means what
its author tested in a browser.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import re2

MAX_PATTERN_LENGTH = 1000
# Compiling costs about 0.5 us per RE2 instruction, and a Unicode class makes many (``\pL{30}`` is
# 36,000): per pattern, RE2 refuses a program past PATTERN_MEMORY; per schema, the patterns are
# at most MAX_PATTERNS, of MAX_PROGRAM_SIZE instructions in all (core.operation_types). The
# cache holds several schemas' worth, so a job's devices never compile twice.
PATTERN_MEMORY = 1 << 20
MAX_PATTERNS = 32
MAX_PROGRAM_SIZE = 200_000
_CACHED_PATTERNS = 256

# ECMA 262's ``\s`` and ``.`` take more characters than RE2's (which are ASCII-only / exclude only
# ``\n``); written out so a schema's pattern means what its author tested in a browser.
_ECMA_SPACE = (
    r"\t\n\x0B\f\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}"
    r"\x{FEFF}"
)
_ECMA_DOT = r"[^\n\r\x{2028}\x{2029}]"
_NOTHING = r"[^\x{0}-\x{10FFFF}]"
_ANYTHING = r"[\x{0}-\x{10FFFF}]"
_HEX = frozenset("0123456789abcdefABCDEF")


class PatternError(ValueError):
    """A pattern RE2 cannot take (backreferences, lookaround, too long or too large...)."""


@dataclass(frozen=True)
class Compiled:
    regex: Any  # re2._Regexp, or None with ``error`` set
    error: str = ""

    @property
    def size(self) -> int:
        return int(self.regex.programsize) if self.regex is not None else 0

    def search(self, text: str) -> bool:
        """Whether the pattern matches anywhere in ``text``; PatternError for a pattern RE2
        could not take, UnicodeEncodeError when ``text`` holds a lone surrogate."""
        if self.regex is None:
            raise PatternError(self.error)
        return self.regex.search(text) is not None


def check_pattern(pattern: str) -> None:
    """PatternError saying why ``pattern`` cannot be evaluated; nothing when it can."""
    compiled = compile_pattern(pattern)
    if compiled.regex is None:
        raise PatternError(compiled.error)


def pattern_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` (ECMA 262 syntax) matches anywhere in ``text``, as JSON-Schema's
    ``pattern`` means it: an unanchored search. PatternError when RE2 cannot take the pattern,
    UnicodeEncodeError when ``text`` holds a lone surrogate."""
    return compile_pattern(pattern).search(text)


@functools.lru_cache(maxsize=_CACHED_PATTERNS)
def compile_pattern(pattern: str) -> Compiled:
    # Compiled once per distinct pattern: a 10,000-device job checks the same few patterns
    # 10,000 times. A failure is cached too (a type stored before this check may hold one).
    return compiled(pattern, PATTERN_MEMORY)


def compiled(pattern: str, memory: int) -> Compiled:
    """``pattern`` compiled with at most ``memory`` bytes for its program (not cached)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return Compiled(None, f"is longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = memory
    try:
        return Compiled(re2.compile(re2_syntax(pattern), options))
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        hint = (
            "; backreferences and lookaround are not supported"
            if "escape" in str(reason) or "perl operator" in str(reason)
            else ""
        )
        return Compiled(None, f"is not a pattern this API can evaluate ({reason}){hint}")
    except UnicodeEncodeError:
        return Compiled(None, "must be valid Unicode text (it holds a lone surrogate)")


# --- ECMA 262 to RE2 ---


def re2_syntax(pattern: str) -> str:
    r"""An ECMA 262 pattern in RE2's syntax where the two spell the same thing differently:
    ``\uXXXX`` (surrogate pairs joined) and ``\u{X}`` escapes, ``\cX``, ``[]`` / ``[^]``, and
    ECMA's wider ``\s``, ``\S`` and ``.``. What RE2 lacks (backreferences, lookaround) is left for
    RE2 to refuse."""
    out: list[str] = []
    at, in_class = 0, False
    while at < len(pattern):
        if pattern[at] == "\\" and at + 1 < len(pattern):
            text, length = _escape(pattern, at, in_class)
        elif in_class:
            text, length, in_class = pattern[at], 1, pattern[at] != "]"
        elif pattern[at] == "[":
            text, length, in_class = _class_start(pattern, at)
        else:
            text, length = (_ECMA_DOT if pattern[at] == "." else pattern[at]), 1
        out.append(text)
        at += length
    return "".join(out)


def _escape(pattern: str, at: int, in_class: bool) -> tuple[str, int]:
    """The RE2 spelling of the escape at ``at`` and how many characters it takes."""
    escaped = pattern[at + 1]
    if escaped == "u":
        code, length = _unicode_escape(pattern, at)
        if length:
            return f"\\x{{{code:X}}}", length
    elif escaped == "c" and _is_ascii_letter(pattern[at + 2 : at + 3]):
        return f"\\x{{{ord(pattern[at + 2]) % 32:X}}}", 3
    elif escaped == "s":
        return (_ECMA_SPACE if in_class else f"[{_ECMA_SPACE}]"), 2
    elif escaped == "S" and not in_class:
        return f"[^{_ECMA_SPACE}]", 2
    return pattern[at : at + 2], 2


def _class_start(pattern: str, at: int) -> tuple[str, int, bool]:
    """A ``[`` at ``at``: its RE2 spelling, its length, and whether a class is now open. ECMA
    closes a class at its first ``]``: ``[]`` matches nothing, ``[^]`` anything (RE2 would read
    the ``]`` as a member)."""
    if pattern.startswith("[]", at):
        return _NOTHING, 2, False
    if pattern.startswith("[^]", at):
        return _ANYTHING, 3, False
    if pattern.startswith("[^", at):
        return "[^", 2, True
    return "[", 1, True


def _is_ascii_letter(char: str) -> bool:
    return len(char) == 1 and char.isascii() and char.isalpha()


def _unicode_escape(pattern: str, at: int) -> tuple[int, int]:
    r"""The code point of the ``\u`` escape at ``at`` and its length; length 0 when it is none."""
    if pattern.startswith("\\u{", at):
        close = pattern.find("}", at + 3)
        digits = pattern[at + 3 : close]
        if close > 0 and 0 < len(digits) <= 6 and set(digits) <= _HEX:
            code = int(digits, 16)
            if code <= 0x10FFFF:
                return code, close + 1 - at
        return 0, 0
    digits = pattern[at + 2 : at + 6]
    if len(digits) < 4 or not set(digits) <= _HEX:
        return 0, 0
    code = int(digits, 16)
    low = pattern[at + 8 : at + 12]
    if (
        0xD800 <= code <= 0xDBFF
        and pattern.startswith("\\u", at + 6)
        and len(low) == 4
        and set(low) <= _HEX
        and 0xDC00 <= int(low, 16) <= 0xDFFF
    ):
        return 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00), 12
    return code, 6
