"""Reading the files people hand to privmeter: one place that turns a missing,
unreadable, oversized, non-UTF-8 or non-JSON file into a
:class:`~privmeter.errors.ConfigError` naming the file and what it should be.

Every command reads its JSON inputs (scenario, statement, proof, keys,
feeds) through :func:`read_json_file`, so a user's mistake ends in one line,
``privmeter CMD: error: scenario file 'x.json' is not valid JSON (line 1,
column 27)``, never in a traceback.
"""

from __future__ import annotations

import json
import os
from typing import Any

from privmeter.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "read_json_file", "read_text_file"]

MAX_FILE_BYTES = 64 * 1024 * 1024  # no input file of ours is near this; a bigger one is a mistake


def read_text_file(
    path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_FILE_BYTES
) -> str:
    """The UTF-8 text of ``path``; :class:`ConfigError` saying why it cannot be read."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {name!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} file {name!r} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {name!r}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{what} file {name!r} is larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} file {name!r} is not UTF-8 text (byte {data[exc.start]:#04x} "
            f"at offset {exc.start})"
        ) from None


def read_json_file(
    path: str | os.PathLike[str], what: str, *, max_bytes: int = MAX_FILE_BYTES
) -> Any:
    """The JSON value in ``path``; :class:`ConfigError` for an unreadable file or invalid JSON."""
    text = read_text_file(path, what, max_bytes=max_bytes)
    if not text.strip():
        raise ConfigError(f"{what} file {str(path)!r} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{what} file {str(path)!r} is not valid JSON ({exc.msg}: line {exc.lineno}, "
            f"column {exc.colno}); is it truncated?"
        ) from None
    except RecursionError:
        raise ConfigError(f"{what} file {str(path)!r} nests too deeply") from None
