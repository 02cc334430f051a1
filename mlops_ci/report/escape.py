"""Text from a pull request made harmless where it is shown: Markdown cells, the terminal (whose
lines the Actions runner parses for workflow commands), commit statuses; and the comment marker.

Every renderer goes through these functions, so each rule lives in one place.
"""

from __future__ import annotations

import re
from typing import Any

#: Hidden marker that finds the sticky comment again on the next run (with its author: see
#: `report.comment`). A marker typed into a pull request's text is escaped by `cell`, so it
#: never appears in a rendered report as a real HTML comment.
MARKER = "<!-- mlops-ci:report -->"

#: GitHub answers 422 to a commit status description longer than this.
STATUS_LIMIT = 140

# What GitHub's Markdown would act on inside a table cell: HTML (raw tags, comments, so forged
# markers), entities, pipes that end the cell, @mentions that ping people and teams, and the
# link/image/emphasis syntax that could dress text up as ours.
#
# An entity alone does not defuse what GitHub finds in the rendered *text*: `&#64;` is decoded
# before mentions and e-mail autolinks are looked for (github/cmark-gfm#181), so an `@` is
# followed by a zero-width space, which neither a login nor a domain may start with. URL
# autolinks are found in the source (at `://`, at `www.`), so an entity there is enough, inside
# `<code>` too.
_CELL = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": "&#124;",
    "@": "&#64;\u200b",
    "://": "&#58;//",
    "www.": "www&#46;",
    "`": "&#96;",
    "[": "&#91;",
    "]": "&#93;",
    "*": "&#42;",
    "_": "&#95;",
    "~": "&#126;",
    "\\": "&#92;",
    "!": "&#33;",
    "#": "&#35;",
}
_CELL_RE = re.compile("|".join(re.escape(k) for k in _CELL))
_NEWLINES = re.compile(r"\r\n|\r|\n")


def one_line(value: Any) -> str:
    """`value` as one line: CR and LF shown as the two characters `\\r` and `\\n`."""
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def cell(value: Any) -> str:
    """Text that stays inert inside a Markdown table cell, a list item or HTML (`<summary>`).

    Line breaks are shown escaped, never taken: a pull request cannot start a new row, a
    heading or a list item, open HTML, mention a team, or plant the comment marker.
    """
    return _CELL_RE.sub(lambda m: _CELL[m.group(0)], one_line(value))


def code(value: Any) -> str:
    """`value` in a monospace font that works everywhere, `<summary>` included (where
    backticks are not parsed): an HTML `<code>` element around the escaped text."""
    return f"<code>{cell(value)}</code>"


# The runner reads every output line (stdout and stderr, split at CR or LF) and runs it as a
# workflow command when, after leading whitespace, it starts with `::` (or holds a legacy
# `##[` command anywhere). A zero-width space keeps the text readable and the runner blind.
_COMMAND_START = re.compile(r"^(\s*):(?=:)", re.MULTILINE)
_LEGACY_COMMAND = re.compile(r"##\[")


def fence(text: str) -> str:
    """`text` as a fenced Markdown code block that nothing in it can close: the fence is longer
    than any run of backticks in the text (a fence closes only on one at least as long), so
    names and paths from a pull request stay text, never HTML, a heading or a mention."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    marks = "`" * max(3, longest + 1)
    return f"{marks}\n{text}\n{marks}"


def terminal(text: str) -> str:
    """Text for a runner's log: no line can be read as a workflow command."""
    lines = _NEWLINES.split(text)
    out = [_COMMAND_START.sub("\\1:\u200b", line) for line in lines]
    return _LEGACY_COMMAND.sub("##\u200b[", "\n".join(out))


def status(text: str, limit: int = STATUS_LIMIT) -> str:
    """A commit status description: one line, cut to GitHub's limit with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
