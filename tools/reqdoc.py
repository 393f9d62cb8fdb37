#!/usr/bin/env python3
"""
docs/requirements.md: every requirement id the code or the tests cite, its source, where it
is implemented and which tests prove it.

The ids come from the project's requirements digest (rule rows such as
C{| CL-Q-05 | C | 4380 §5.2.1 | MUST | ... |}).  The doc keeps the text of every rule we cite,
so it stands on its own; the "implemented in" and "tested in" columns are a scan of
C{teredonode/} and C{tests/}.  C{tests/unit/test_requirements_doc.py} re-renders the doc from
its own rule texts and a fresh scan and fails on any difference: a new citation, a moved one
or a dropped one all show up as drift.

Regenerate (after citing a new id, or with a newer digest)::

    python3 tools/reqdoc.py [DIGEST.md] > docs/requirements.md

Without a digest the rule texts already in docs/requirements.md are reused.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "requirements.md"
#: The doc's own test quotes ids as sample data, not as citations.
SELF_TEST = "tests/unit/test_requirements_doc.py"

#: A requirement id as cited in code, tests and the digest.
ID = re.compile(r"\b(?:(?:CL|SV|RL|HR|G|W|X|SEC|U|SA)-(?:[A-Z0-9]+-)*\d+[a-z]?|D\d{1,2})\b")
#: A rule stated as a list item in the digest's prose sections: "4. **SV-IN-4** (MUST): ...".
_BULLET = re.compile(r"^\s*(?:[*-]|\d+\.)\s+\*\*([A-Z][A-Z0-9-]*)\*\*\s*(.*)$")
_LEVEL = re.compile(r"^\(([^)]*)\):?\s*")


@dataclass(frozen=True)
class Rule:
    id: str
    source: str
    level: str
    text: str


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def rules_from_digest(text: str) -> dict[str, Rule]:
    """
    Every rule row of the digest's tables, whatever the table's column order: the header
    row names the columns (ID or #, Source / RFC § / 5991 § / Basis / Where, Level, and the
    statement under Rule / Testable statement / Change / Problem).
    """
    rules: dict[str, Rule] = {}
    header: list[str] | None = None
    heading = ""
    bullets: dict[str, Rule] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            heading = re.sub(r"^#+\s*[\d.]*\s*", "", line).strip()
        bullet = _BULLET.match(line)
        if bullet and ID.fullmatch(bullet.group(1)) and bullet.group(1) not in bullets:
            rest = bullet.group(2)
            level = _LEVEL.match(rest)
            statement = rest[level.end():] if level else rest
            bullets[bullet.group(1)] = Rule(
                bullet.group(1), heading, (level.group(1) if level else "").replace("**", ""),
                statement.replace("**", "").strip(),
            )
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if cells and cells[0] in ("ID", "#"):
            header = [c.lower() for c in cells]
            continue
        if header is None or set(line) <= set("|-: ") or len(cells) != len(header):
            continue
        row = dict(zip(header, cells))
        rid = cells[0]
        if not ID.fullmatch(rid) or rid in rules:
            continue
        source = next((row[k] for k in ("rfc §", "source", "5991 §", "basis", "where") if k in row), "")
        rowLevel = row.get("level", "")
        text_ = next(
            (row[k] for k in ("testable statement", "rule", "change", "recommended handling") if k in row), ""
        )
        if "problem" in row:
            text_ = f"{row['problem']} Handling: {text_}"
        rules[rid] = Rule(rid, source, rowLevel, text_)
    # Table rows are the compact form; a rule stated only in the prose is taken from there.
    for rid, rule in bullets.items():
        rules.setdefault(rid, rule)
    return rules


def rules_from_doc(text: str) -> dict[str, Rule]:
    """
    The rule texts kept in docs/requirements.md (its own table).
    """
    rules: dict[str, Rule] = {}
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = _cells(line)
        if len(cells) == 6 and ID.fullmatch(cells[0].strip("`")):
            rid = cells[0].strip("`")
            rules[rid] = Rule(rid, cells[1], cells[2], cells[3].replace("\\|", "|"))
    return rules


def scan(root: Path = ROOT) -> dict[str, tuple[set[str], set[str]]]:
    """
    id -> (modules under teredonode/ citing it, test files citing it), paths relative to
    C{root}.
    """
    cited: dict[str, tuple[set[str], set[str]]] = {}
    for kind, folder in ((0, "teredonode"), (1, "tests")):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == SELF_TEST:
                continue
            for rid in set(ID.findall(path.read_text(encoding="utf-8"))):
                cited.setdefault(rid, (set(), set()))[kind].add(rel)
    return cited


def render(rules: dict[str, Rule], cited: dict[str, tuple[set[str], set[str]]]) -> str:
    known = sorted((r for r in cited if r in rules), key=_order)
    unknown = sorted((r for r in cited if r not in rules), key=_order)
    lines = [
        "# Requirements cited in the code",
        "",
        "Every requirement id that `teredonode/` or `tests/` cites: the RFC section it comes",
        "from, its level and text (from the project's requirements digest), the modules that",
        "implement it and the tests that prove it. Generated by `tools/reqdoc.py`;",
        "`tests/unit/test_requirements_doc.py` fails when this page and the code disagree.",
        "Ids starting with D are defects and ambiguities of the RFC texts and how we handle them.",
        "",
        f"{len(known)} ids cited.",
        "",
        "| id | source | level | rule | implemented in | tested in |",
        "|---|---|---|---|---|---|",
    ]
    for rid in known:
        rule = rules[rid]
        impl, tests = cited[rid]
        lines.append(
            f"| `{rid}` | {rule.source} | {rule.level} | {rule.text.replace('|', chr(92) + '|')} | "
            f"{_files(impl)} | {_files(tests)} |"
        )
    if unknown:
        lines += ["", "## Cited but not in the digest", ""]
        for rid in unknown:
            impl, tests = cited[rid]
            lines.append(f"- `{rid}`: {_files(impl | tests)}")
    return "\n".join(lines) + "\n"


def _files(paths: set[str]) -> str:
    return ", ".join(f"`{p}`" for p in sorted(paths)) or "—"


def _order(rid: str) -> tuple[str, ...]:
    return tuple(part.zfill(3) if part.isdigit() else part for part in re.split(r"(\d+)", rid))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        rules = rules_from_digest(Path(argv[1]).read_text(encoding="utf-8"))
    else:
        rules = rules_from_doc(DOC.read_text(encoding="utf-8"))
    sys.stdout.write(render(rules, scan()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
