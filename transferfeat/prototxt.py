"""A small reader and writer for protobuf text format (prototxt), enough to check, query and edit
rendered files. Quoted strings become ``str``, bare identifiers (enum values) ``Word``, so a
reader can tell ``type: "MAX"`` from ``pool: MAX`` as protobuf does."""
from __future__ import annotations

import re
import warnings

from .errors import Error

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}:])|([^\s{}:"#]+))')


class Word(str):
    """A bare identifier: an enum value (``MAX``, ``TRAIN``)."""


class Message(dict):
    """Field name -> list of values (repeated fields keep their order); ``line``: where it starts;
    ``lines``: field name -> the line it first appears on."""
    line = 1

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.lines = {}

    def one(self, key, default=None):
        values = self.get(key)
        return values[-1] if values else default

    def all(self, key) -> list:
        return self.get(key, [])


def _value(tok: str, name: str, line: int):
    if tok.startswith('"'):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)      # "\777": Python warns, protobuf reads
                return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
        except UnicodeDecodeError:
            raise Error(f"{name}: line {line}: bad escape in the string {tok[:40]}") from None
    if tok in ("true", "false"):
        return tok == "true"
    try:
        return int(tok)
    except ValueError:
        pass
    try:
        return float(tok)
    except ValueError:
        return Word(tok)


def parse(text: str, name: str = "<prototxt>") -> Message:
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise Error(f"{name}: line {text.count(chr(10), 0, pos) + 1}: cannot read {text[pos:pos + 20]!r}")
            break
        if not m.group(1) and m.group(0).strip():
            tokens.append((m.group(2) or m.group(3) or m.group(4), text.count("\n", 0, m.start(m.lastindex)) + 1))
        pos = m.end()
    stack = [Message()]
    i = 0
    while i < len(tokens):
        tok, line = tokens[i]
        if tok == "}":
            if len(stack) == 1:
                raise Error(f"{name}: line {line}: unbalanced '}}'")
            stack.pop()
            i += 1
            continue
        if tok in ("{", ":") or tok.startswith('"'):
            raise Error(f"{name}: line {line}: expected a field name, got {tok[:40]!r}")
        nxt = tokens[i + 1][0] if i + 1 < len(tokens) else None
        stack[-1].lines.setdefault(tok, line)
        if nxt == ":" and i + 2 < len(tokens) and tokens[i + 2][0] not in "{}:":
            stack[-1].setdefault(tok, []).append(_value(tokens[i + 2][0], name, line))
            i += 3
        elif nxt == "{" or (nxt == ":" and i + 2 < len(tokens) and tokens[i + 2][0] == "{"):
            child = Message()
            child.line = line
            stack[-1].setdefault(tok, []).append(child)
            stack.append(child)
            i += 2 if nxt == "{" else 3
        else:
            raise Error(f"{name}: line {line}: expected ':' or '{{' after {tok!r}")
    if len(stack) != 1:
        raise Error(f"{name}: unexpected end of file inside a message")
    return stack[0]


def quote(text: str) -> str:
    """``text`` as a prototxt string literal: quotes, backslashes and control characters escaped."""
    out = []
    for ch in str(text):
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dump(msg: Message, indent: str = "") -> str:
    """``msg`` as prototxt text (fields in their order; what ``parse`` reads back to the same Message)."""
    lines = []
    for key, values in msg.items():
        for v in values:
            if isinstance(v, Message):
                lines.append(f"{indent}{key} {{")
                body = dump(v, indent + "  ")
                if body:
                    lines.append(body.rstrip("\n"))
                lines.append(f"{indent}}}")
            elif isinstance(v, bool):
                lines.append(f"{indent}{key}: {'true' if v else 'false'}")
            elif isinstance(v, Word) or isinstance(v, (int, float)):
                lines.append(f"{indent}{key}: {v}")
            else:
                lines.append(f"{indent}{key}: {quote(v)}")
    return "\n".join(lines) + ("\n" if lines else "")
