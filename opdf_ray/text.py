"""Text made for a human or a shell from values we did not choose (paths, ids, settings): Markdown-escaped,
shell-quoted, and quoted in errors at a bounded length."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

QUOTE_LIMIT = 120           # characters of a value an error message repeats
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&~=$^\"'])")


def quoted(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said: an error names what was wrong
    without repeating a value of any size (a YAML file of nested aliases once made an 80 MB "one-line" error)."""
    text = " ".join(repr(value).splitlines())        # a str's repr has none; an array's breaks lines
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a command-line argument of undecodable bytes holds lone surrogates, which
    train and then fail where a leaderboard, a results.json or a terminal stores them."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def markdown(text) -> str:
    """``text`` as literal Markdown (CommonMark backslash escapes; line breaks and control characters as spaces):
    a path or an id in a card or a report renders as itself, never as markup, a link or raw HTML."""
    flat = "".join(" " if (c in "\r\n\t" or ord(c) < 32 or ord(c) == 127) else c for c in str(text))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def shell_join(args: Iterable) -> str:
    """A command line that a POSIX shell (bash, zsh) runs as exactly ``args``: each argument quoted
    (``shlex.quote``: spaces, quotes, ``$(…)`` stay text); one holding a line break or another control character
    is written ``$'…'`` with escapes, so the command stays on one line."""
    return " ".join(_ansi_c(a) if any(ord(c) < 32 or ord(c) == 127 for c in a) else shlex.quote(a)
                    for a in map(str, args))


def _ansi_c(arg: str) -> str:
    out = []
    for c in arg:
        if c in "\\'":
            out.append("\\" + c)
        elif ord(c) < 32 or ord(c) == 127:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{ord(c):02x}"))
        else:
            out.append(c)
    return "$'" + "".join(out) + "'"
