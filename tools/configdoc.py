#!/usr/bin/env python3
"""
docs/config.md: the settings reference, one table per configuration table, rendered from the
declarations in C{teredonode/config.py} (each key's check, default and doc), so the reference
cannot say something the code does not do.

Only the sections between C{<!-- BEGIN GENERATED [table] ... -->} and
C{<!-- END GENERATED [table] -->} are rendered; the prose around them is written by hand.
C{tests/unit/test_config_doc.py} re-renders the file and fails on any difference.

Regenerate (after adding or changing a setting)::

    python3 tools/configdoc.py            # rewrites docs/config.md in place
    python3 tools/configdoc.py --check    # exit status 1 when it is stale
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "config.md"
# This checkout's package, not whichever one is installed.
sys.path.insert(0, str(ROOT))

from teredonode.config import (  # noqa: E402
    OVERRIDES,
    RENAMED,
    REQUIRED,
    SCHEMA,
    TUNNEL_ROLES,
)

BEGIN = "<!-- BEGIN GENERATED [{table}] by tools/configdoc.py from teredonode/config.py -->"
END = "<!-- END GENERATED [{table}] -->"
_SECTION = re.compile(
    r"<!-- BEGIN GENERATED \[(?P<table>[^\]]+)\][^\n]*-->\n.*?<!-- END GENERATED \[(?P=table)\] -->",
    re.S,
)


def toml(value: Any) -> str:
    """
    A default as it would be written in the file.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    return repr(value)


def default_text(key: Any) -> str:
    if key.default is REQUIRED:
        return "**required**"
    if key.shown:
        return str(key.shown)
    if key.default is None:
        return "unset"
    show = key.check.show or toml
    return f"`{show(key.default)}`"


def overrides_text(table: str, name: str) -> str:
    """
    The command-line options that set this key, from L{OVERRIDES}.
    """
    options = [f"`--{option}`" for option, where in OVERRIDES.items() if where == (table, name)]
    if not options:
        return ""
    text = "Override: " + " or ".join(options)
    if name == "interface" and table in TUNNEL_ROLES:
        text += " (or `--interface`)"
    return text + "."


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_table(table: str) -> str:
    """
    The generated section of one table, markers included.
    """
    lines = [
        BEGIN.format(table=table),
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key in SCHEMA[table]:
        meaning = " ".join(part for part in (key.doc, key.more, overrides_text(table, key.name)) if part)
        lines.append(
            f"| `{key.name}` | {_cell(key.kind or key.check.kind)} | {_cell(default_text(key))} "
            f"| {_cell(meaning)} |"
        )
    for (where, name), instead in RENAMED.items():
        if where == table:
            lines += ["", f"`{name}` is no longer a key: {instead}."]
    lines += ["", END.format(table=table)]
    return "\n".join(lines)


def render(text: str) -> str:
    """
    C{text} (docs/config.md) with every generated section rendered again.

    @raise ValueError: when a table has no section, or a section names no table.
    """
    seen: list[str] = []

    def again(match: re.Match[str]) -> str:
        table = match.group("table")
        if table not in SCHEMA:
            raise ValueError(f"generated section for unknown table [{table}]")
        seen.append(table)
        return render_table(table)

    out = _SECTION.sub(again, text)
    missing = [table for table in SCHEMA if table not in seen]
    if missing:
        raise ValueError(
            "no generated section for " + ", ".join(f"[{table}]" for table in missing)
            + "; add " + BEGIN.format(table=missing[0]) + " and " + END.format(table=missing[0])
        )
    return out


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    rendered = render(text)
    if argv[1:] == ["--check"]:
        if rendered != text:
            print("docs/config.md is stale: run python3 tools/configdoc.py", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: python3 tools/configdoc.py [--check]", file=sys.stderr)
        return 2
    if rendered != text:
        DOC.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
