"""
C{teredo lab matrix}: RFC 6081 Figure 1, measured.

For every source kind X and destination kind Y of the lab's NATs (L{nat.FIGURE1}), a client A
behind X pings a client B behind Y, Teredo address to Teredo address, through the same Teredo
server; the result is printed next to what Figure 1 expects of the cell.

What each cell expects is L{FIGURE1_CELLS}, the figure as printed (6081 §3), read against
the extensions the client implements (L{client_extensions}):

  - "Yes" (RFC 4380 alone), or a set of extensions the client has: the cell must work, and a
    failure makes the run fail;
  - a set of extensions the client lacks: "needs EXT", reported, never a failure;
  - "No": no connectivity is expected (a success is reported as such, not a failure).

So when an extension lands in the client (its C{RFC6081_EXTENSIONS}), the cells it enables
become cells that must work, without touching this module.

Every measurement starts from nothing: both clients are (re)started and both NATs reset
(L{Lab.set_nat_mode}: rules rewritten, conntrack flushed, userspace NAT and miniupnpd
restarted), so A -> B never rides on holes an earlier B -> A punched.  One lab serves a whole
row: A's NAT keeps the row's kind, B's NAT is switched from column to column, and the lab
measures both directions of each pair (X, Y) with Y at or after X, so a full matrix of n
kinds builds n labs and makes n * n measurements.

C{--port-guessing} adds the project's port guessing (beyond RFC 6081, off by default, see
docs/nat-traversal.md section 4): every cell our clients did not reach with their defaults and
that Figure 1 does not hold them to (a "No", or an extension they lack) is measured once more
from fresh clients and NATs with C{port-guessing = true} on both, with a longer ping (the
search takes seconds).  Those results are reported apart, as what
guessing turned into "yes" in that run: the search is probabilistic, so a miss is no failure
and a hit no promise, and the RFC verdict above it is the default client's.

Our clients run with their default settings: Symmetric NAT Support is on by default and
qualifies a client behind a symmetric NAT (6081 section 3.1), which RFC 4380 alone
keeps offline (section 5.2.1); C{allow-symmetric}, which forced that before Symmetric NAT
Support existed, changes nothing while it is on.  The server's Router Solicitation budget is
raised (the matrix restarts the client behind one NAT address dozens of times a minute).
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import teredonode
from teredonode.errors import LabError
from teredonode.lab.proc import which
from teredonode.lab.demo import parse_ping
from teredonode.lab.lab import Lab
from teredonode.lab.nat import FIGURE1, NAT_MODES
from teredonode.lab.scenario import CUSTOM_PREFIX

# ---------------------------------------------------------------- RFC 6081 Figure 1, as data

#: The extensions Figure 1 names, by the abbreviation it uses.
EXTENSIONS: dict[str, str] = {
    "SNS": "Symmetric NAT Support (RFC 6081 section 5.2)",
    "UPnP": "UPnP-Enabled Symmetric NAT (section 5.3)",
    "PP": "Port-Preserving Symmetric NAT (section 5.4)",
    "SS": "Sequential Port-Symmetric NAT (section 5.5)",
}

#: RFC 6081 Figure 1, row by row as printed: rows are the source's NAT, columns the
#: destination's, both in the order of L{nat.FIGURE1}.  "Yes": RFC 4380 alone; "No": no
#: connectivity; otherwise the extensions needed, joined by "+".  Not symmetric: port-preserving
#: -> sequential is SNS+SS, sequential -> port-preserving is No.
FIGURE1_CELLS: tuple[tuple[str, ...], ...] = (
    # cone   addr-r  port-r  UPnP-pr     UPnP-ps     pp-sym    seq-sym   port-sym  addr-sym
    ("Yes", "Yes", "Yes", "Yes", "SNS", "SNS", "SNS", "SNS", "SNS"),  # Cone
    ("Yes", "Yes", "Yes", "Yes", "SNS", "SNS", "SNS", "SNS", "No"),  # Address restricted
    ("Yes", "Yes", "Yes", "Yes", "No", "SNS+PP", "SNS+SS", "No", "No"),  # Port restricted
    ("Yes", "Yes", "Yes", "Yes", "SNS+UPnP", "No", "No", "No", "No"),  # UPnP Port-restricted
    ("SNS", "SNS", "No", "SNS+UPnP", "SNS+UPnP", "No", "No", "No", "No"),  # UPnP Port symmetric
    ("SNS", "SNS", "SNS+PP", "No", "No", "SNS+PP", "SNS+SS", "No", "No"),  # Port-preserving Port-symmetric
    ("SNS", "SNS", "SNS+SS", "No", "No", "No", "No", "No", "No"),  # Sequential Port-symmetric
    ("SNS", "SNS", "No", "No", "No", "No", "No", "No", "No"),  # Port-symmetric
    ("SNS", "No", "No", "No", "No", "No", "No", "No", "No"),  # Address-symmetric
)

#: The lab's kinds in Figure 1's order, and their names in the figure.
KINDS: tuple[str, ...] = tuple(kind for _, kind in FIGURE1)
FIGURE1_NAMES: dict[str, str] = {kind: name for name, kind in FIGURE1}

#: What C{--quick} measures: one kind that always works, one RFC 4380 needs both sides to
#: punch through, one that needs Symmetric NAT Support, and one that also needs the
#: Port-Preserving extension (toward port-restricted and toward itself).
QUICK_KINDS: tuple[str, ...] = ("cone", "port-restricted", "port-preserving-symmetric", "port-symmetric")

#: Extensions the client advertises when its module declares none (C{RFC6081_EXTENSIONS}).
NO_EXTENSIONS: frozenset[str] = frozenset()
#: Miredo implements none of RFC 6081 (its own symmetric-NAT trick is not SNS).
MIREDO_EXTENSIONS: frozenset[str] = frozenset()


def parse_cell(text: str) -> frozenset[str] | None:
    """
    One Figure 1 cell: the extensions it needs (empty for "Yes"), or None for "No".
    """
    if text == "No":
        return None
    if text == "Yes":
        return frozenset()
    needs = frozenset(text.split("+"))
    unknown = needs - EXTENSIONS.keys()
    if unknown:
        raise ValueError(f"Figure 1 cell {text!r}: unknown extension {', '.join(sorted(unknown))}")
    return needs


def _figure1_matrix() -> dict[tuple[str, str], frozenset[str] | None]:
    if len(FIGURE1_CELLS) != len(KINDS) or any(len(row) != len(KINDS) for row in FIGURE1_CELLS):
        raise ValueError("Figure 1 must be square, one row and column per kind")
    return {
        (src, dst): parse_cell(FIGURE1_CELLS[i][j])
        for i, src in enumerate(KINDS)
        for j, dst in enumerate(KINDS)
    }


#: (source kind, destination kind) -> extensions needed (empty: RFC 4380), None: no connectivity.
FIGURE1_MATRIX: dict[tuple[str, str], frozenset[str] | None] = _figure1_matrix()


def format_needs(needs: Iterable[str]) -> str:
    """
    Extensions in Figure 1's spelling and order ("SNS+PP").
    """
    chosen = set(needs)
    return "+".join(name for name in EXTENSIONS if name in chosen)


@dataclass(frozen=True)
class Expectation:
    """
    What one cell expects of a client with a given set of extensions.
    """

    required: frozenset[str] | None  # None: Figure 1 says "No"
    missing: frozenset[str] = frozenset()

    @property
    def must_work(self) -> bool:
        """
        The cell works with what the client has: a failure fails the run.
        """
        return self.required is not None and not self.missing

    @property
    def label(self) -> str:
        if self.required is None:
            return "No"
        if self.missing:
            return f"needs {format_needs(self.missing)}"
        return format_needs(self.required) or "Yes"


def expectation(src: str, dst: str, extensions: frozenset[str]) -> Expectation:
    """
    Figure 1's cell (C{src}, C{dst}) for a client implementing C{extensions}.
    """
    try:
        required = FIGURE1_MATRIX[(src, dst)]
    except KeyError:
        raise LabError(f"no Figure 1 cell for {src} -> {dst} (kinds: {', '.join(KINDS)})") from None
    if required is None:
        return Expectation(None)
    return Expectation(required, required - extensions)


def client_extensions(impl: str) -> frozenset[str]:
    """
    The RFC 6081 extensions a client implementation has: ours declares them as
    C{teredonode.roles.client.RFC6081_EXTENSIONS} (none while it does not).
    """
    if impl == "miredo":
        return MIREDO_EXTENSIONS
    from teredonode.roles import client

    declared = getattr(client, "RFC6081_EXTENSIONS", NO_EXTENSIONS)
    return frozenset(str(name) for name in declared) & EXTENSIONS.keys()


# ---------------------------------------------------------------- measurements

IMPLS = ("teredonode", "miredo")
QUALIFY_TIMEOUT = 10.0
#: Echo requests per direction, one a second; a reply is awaited up to L{PING_WAIT} s after
#: the last, long enough for two more rounds of bubbles (RFC 4380 section 5.2.6: 2 s apart).
PING_COUNT = 3
PING_INTERVAL = 1.0
PING_WAIT = 4
#: Our server's Router Solicitation budget in the matrix's labs (see the module docstring).
SERVER_SETTINGS: dict[str, object] = {"rs-rate": 100, "rs-burst": 100, "rs-initial": 100}
#: Our clients' settings in the matrix: the defaults (see the module docstring).
CLIENT_SETTINGS: dict[str, object] = {}
#: Port guessing (C{--port-guessing}): our clients' extra settings (the search's defaults:
#: n = m = 256 at 50 packets/s), and the ping of such a trial, as tools/portguess_lab.py's:
#: L{GUESS_PINGS} echo requests L{GUESS_INTERVAL} s apart, a reply awaited L{GUESS_WAIT} s
#: after the last (a search opens its n sockets, then probes: 5-9 s to the first reply).
#: A fixed count, not "until a reply": iputils ping counts the client's ICMPv6 errors (sent
#: when its bubbles run out) against C{-c}, so it would stop while the search still runs.
GUESS_SETTINGS: dict[str, object] = {"port-guessing": True}
GUESS_PINGS = 20
GUESS_INTERVAL = 0.5
GUESS_WAIT = 2
DEFAULT_MAX_SECONDS = 1800.0
QUICK_MAX_SECONDS = 240.0


@dataclass
class Trial:
    """
    One measured direction: C{src_kind}'s client pings C{dst_kind}'s.
    """

    src: str
    dst: str
    impl: str
    sent: int = 0
    received: int = 0
    first_reply: float | None = None  # seconds from the first echo request to the first reply
    note: str = ""  # why nothing was measured ("A not qualified", "not run: time budget")
    measured: bool = False
    searches: int | None = None  # port-guessing trials: searches the two clients started (pg-searches)

    @property
    def ok(self) -> bool:
        return self.received > 0


def verdict(expect: Expectation, trial: Trial | None) -> tuple[str, bool]:
    """
    A cell's text and whether it fails the run: a cell that must work and did not, or was
    not measured at all.
    """
    if trial is None or not trial.measured:
        note = trial.note if trial is not None else "not run"
        return f"{note} ({expect.label})", expect.must_work
    if trial.ok:
        timing = f" {format_seconds(trial.first_reply)}" if trial.first_reply is not None else ""
        text = f"ok{timing}"
        if not expect.must_work:
            text += " (unexpected)" if expect.required is None else f" (without {format_needs(expect.missing)})"
        else:
            text += f" ({expect.label})"
        return text, False
    if expect.must_work:
        return f"FAIL{' ' + trial.note if trial.note else ''} ({expect.label})", True
    return f"no ({expect.label})", False


def format_seconds(seconds: float) -> str:
    """
    A time to first reply: milliseconds below a second (a direct hole punch), else seconds.
    """
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


@dataclass
class MatrixResult:
    kinds: tuple[str, ...]
    impls: tuple[str, ...]
    infra: dict[str, str]  # "server"/"relay" -> implementation
    trials: dict[tuple[str, str, str], Trial] = field(default_factory=dict)  # (impl, src, dst)
    port_guessing: bool = False  # --port-guessing: L{guess_trials} were measured
    guess_trials: dict[tuple[str, str, str], Trial] = field(default_factory=dict)  # (impl, src, dst)
    seconds: float = 0.0
    labs: int = 0
    started: str = ""  # UTC date and time
    versions: dict[str, str] = field(default_factory=dict)
    budget_exhausted: bool = False

    def extensions(self, impl: str) -> frozenset[str]:
        return client_extensions(impl)

    def cell(self, impl: str, src: str, dst: str) -> tuple[Expectation, Trial | None, str, bool]:
        expect = expectation(src, dst, self.extensions(impl))
        trial = self.trials.get((impl, src, dst))
        text, failed = verdict(expect, trial)
        return expect, trial, text, failed

    def failures(self) -> list[tuple[str, str, str]]:
        return [
            (impl, src, dst)
            for impl in self.impls
            for src in self.kinds
            for dst in self.kinds
            if self.cell(impl, src, dst)[3]
        ]

    def to_json(self) -> dict[str, Any]:
        cells = []
        for impl in self.impls:
            for src in self.kinds:
                for dst in self.kinds:
                    expect, trial, text, failed = self.cell(impl, src, dst)
                    cells.append(
                        {
                            "impl": impl,
                            "src": src,
                            "dst": dst,
                            "figure1": FIGURE1_CELLS[KINDS.index(src)][KINDS.index(dst)],
                            "expected": expect.label,
                            "must_work": expect.must_work,
                            "ok": trial.ok if trial and trial.measured else None,
                            "sent": trial.sent if trial else 0,
                            "received": trial.received if trial else 0,
                            "first_reply": trial.first_reply if trial else None,
                            "note": trial.note if trial else "not run",
                            "cell": text,
                            "failed": failed,
                        }
                    )
        return {
            "kinds": list(self.kinds),
            "impls": list(self.impls),
            "infra": self.infra,
            "extensions": {impl: sorted(self.extensions(impl)) for impl in self.impls},
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "labs": self.labs,
            "versions": self.versions,
            "budget_exhausted": self.budget_exhausted,
            "failed": len(self.failures()),
            "cells": cells,
            "port_guessing": self.port_guessing,
            "guess_cells": [
                {
                    "impl": impl, "src": src, "dst": dst, "ok": trial.ok if trial.measured else None,
                    "sent": trial.sent, "received": trial.received, "first_reply": trial.first_reply,
                    "note": trial.note, "searches": trial.searches,
                }
                for (impl, src, dst), trial in sorted(self.guess_trials.items())
            ],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "MatrixResult":
        """
        A result saved by L{to_json} (C{--json}), to render it again (C{--from-json}).
        Expectations are recomputed: they follow the client's extensions of today.
        """
        try:
            result = cls(
                tuple(doc["kinds"]),
                tuple(doc["impls"]),
                dict(doc["infra"]),
                seconds=float(doc["seconds"]),
                labs=int(doc["labs"]),
                started=str(doc["started"]),
                versions=dict(doc["versions"]),
                budget_exhausted=bool(doc["budget_exhausted"]),
            )
            for c in doc["cells"]:
                result.trials[(c["impl"], c["src"], c["dst"])] = Trial(
                    c["src"], c["dst"], c["impl"], sent=int(c["sent"]), received=int(c["received"]),
                    first_reply=c["first_reply"], note=str(c["note"]), measured=c["ok"] is not None,
                )
            # Saved before --port-guessing existed: no guess cells.
            result.port_guessing = bool(doc.get("port_guessing", False))
            for c in doc.get("guess_cells", ()):
                result.guess_trials[(c["impl"], c["src"], c["dst"])] = Trial(
                    c["src"], c["dst"], c["impl"], sent=int(c["sent"]), received=int(c["received"]),
                    first_reply=c["first_reply"], note=str(c["note"]), measured=c["ok"] is not None,
                    searches=c.get("searches"),
                )
        except (KeyError, TypeError, ValueError) as e:
            raise LabError(f"not a saved matrix ({type(e).__name__}: {e})") from None
        for kind in result.kinds:
            if kind not in KINDS:
                raise LabError(f"not a saved matrix (unknown kind {kind!r})")
        return result


def ping_trial(lab: Lab, trial: Trial, src_host: str, src_addr: str, dst_addr: str) -> None:
    """
    C{PING_COUNT} echo requests from C{src_addr} to C{dst_addr}; fill in C{trial}.
    """
    result = lab.exec(
        src_host,
        [
            "ping", "-6", "-n", "-c", str(PING_COUNT), "-i", f"{PING_INTERVAL:g}", "-W", str(PING_WAIT),
            "-I", src_addr, dst_addr,
        ],
        timeout=PING_COUNT * PING_INTERVAL + PING_WAIT + 20,
    )
    ping = parse_ping(result.stdout, PING_COUNT)
    trial.sent, trial.received, trial.measured = PING_COUNT, ping.received, True
    if ping.rtts:
        seq = min(ping.rtts)
        trial.first_reply = (seq - 1) * PING_INTERVAL + ping.rtts[seq] / 1000.0


def guess_ping_trial(lab: Lab, trial: Trial, src_host: str, src_addr: str, dst_addr: str) -> None:
    """
    A port-guessing trial's ping (L{GUESS_PINGS} echo requests L{GUESS_INTERVAL} s apart);
    fill in C{trial}, with what ping says it sent (it stops early once replies and errors
    reach the count).
    """
    result = lab.exec(
        src_host,
        [
            "ping", "-6", "-n", "-c", str(GUESS_PINGS), "-i", f"{GUESS_INTERVAL:g}", "-W", str(GUESS_WAIT),
            "-I", src_addr, dst_addr,
        ],
        timeout=GUESS_PINGS * GUESS_INTERVAL + GUESS_WAIT + 20,
    )
    sent = re.search(r"(\d+) packets transmitted", result.stdout)
    ping = parse_ping(result.stdout, int(sent.group(1)) if sent else GUESS_PINGS)
    trial.sent, trial.received, trial.measured = ping.sent, ping.received, True
    if ping.rtts:
        seq = min(ping.rtts)
        trial.first_reply = (seq - 1) * GUESS_INTERVAL + ping.rtts[seq] / 1000.0


def _start_client(lab: Lab, node: str, host: str, impl: str, guessing: bool = False) -> None:
    if impl == "miredo":
        lab.start_miredo(node, host, "client")
    else:
        lab.start_teredonode(node, host, "client", {**CLIENT_SETTINGS, **(GUESS_SETTINGS if guessing else {})})


def wait_addresses(lab: Lab, hosts: Sequence[str]) -> dict[str, str | None]:
    """
    Each client's Teredo address, polled together until all have one, one exits, or
    L{QUALIFY_TIMEOUT} passes.
    """
    deadline = time.monotonic() + QUALIFY_TIMEOUT
    found: dict[str, str | None] = {h: None for h in hosts}
    while True:
        for h in hosts:
            if found[h] is None:
                found[h] = lab.teredo_address(h)
        exited = any(lab.nodes[h].exit_code() is not None for h in hosts if h in lab.nodes)
        if all(found.values()) or exited or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def measure(lab: Lab, row: str, column: str, impl: str, a_to_b: bool, guessing: bool = False) -> Trial:
    """
    From a clean start (NATs reset, both clients started anew), client1 (behind nat1, kind
    C{row}) pings client2 (behind nat2, kind C{column}), or the reverse.  C{guessing}: our
    clients with port guessing on, and the port-guessing ping (L{guess_ping_trial}).
    """
    src, dst = ("client1", "client2") if a_to_b else ("client2", "client1")
    trial = Trial(row if a_to_b else column, column if a_to_b else row, impl)
    for host in ("client1", "client2"):
        lab.stop_node(host)
    lab.set_nat_mode("nat1", row)
    lab.set_nat_mode("nat2", column)
    for host in ("client1", "client2"):
        _start_client(lab, host, host, impl, guessing)
    addresses = wait_addresses(lab, ("client1", "client2"))
    unqualified = [h for h, a in addresses.items() if a is None]
    if unqualified:
        names = {"client1": f"A ({row})", "client2": f"B ({column})"}
        trial.note = "not qualified: " + ", ".join(names[h] for h in unqualified)
        trial.measured = True
        return trial
    src_addr, dst_addr = addresses[src], addresses[dst]
    assert src_addr is not None and dst_addr is not None
    (guess_ping_trial if guessing else ping_trial)(lab, trial, src, src_addr, dst_addr)
    if guessing:
        trial.searches = sum(_counter(lab, host, "pg-searches") for host in ("client1", "client2"))
    return trial


def _counter(lab: Lab, node: str, name: str) -> int:
    """
    Counter C{name} of our client C{node} (0 when its status cannot be read).
    """
    from teredonode.status import StatusUnavailable

    try:
        counters = lab.node_status(node).get("client", {}).get("counters", {})
    except (StatusUnavailable, OSError, ValueError):
        return 0
    value = counters.get(name, 0) if isinstance(counters, dict) else 0
    return value if isinstance(value, int) else 0


def wants_guess(trial: Trial, impl: str) -> bool:
    """
    Whether C{--port-guessing} measures this cell again: our clients measured it, reached
    nothing, and Figure 1 does not hold them to it (a cell that must work and fails is a
    failure of the RFC's own rules, not a job for guessing).
    """
    if impl != "teredonode" or not trial.measured or trial.ok or trial.note:
        return False
    return not expectation(trial.src, trial.dst, client_extensions(impl)).must_work


def versions(impls: Sequence[str], infra: dict[str, str]) -> dict[str, str]:
    """
    What ran: our version, and Miredo's when it played a part.
    """
    found = {"teredonode": teredonode.__version__}
    if "miredo" in impls or "miredo" in infra.values():
        program = which("miredo")
        if program:
            try:
                out = subprocess.run([program, "-V"], capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            match = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
            found["miredo"] = match.group(1) if match else "unknown"
    return found


def parse_kinds(text: str | None, quick: bool) -> tuple[str, ...]:
    """
    The kinds to measure, in Figure 1's order: C{--kinds}, else L{QUICK_KINDS} or L{KINDS}.
    """
    if not text:
        return QUICK_KINDS if quick else KINDS
    chosen = [k.strip() for k in text.split(",") if k.strip()]
    for kind in chosen:
        if kind not in KINDS:
            known = ", ".join(KINDS) if kind not in NAT_MODES else f"Figure 1 kinds: {', '.join(KINDS)}"
            raise LabError(f"--kinds: {kind!r} is not a kind of RFC 6081 Figure 1 ({known})")
    return tuple(k for k in KINDS if k in chosen)


def run_matrix(
    kinds: Sequence[str],
    impls: Sequence[str] = ("teredonode",),
    miredo_infra: Sequence[str] = (),
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    progress: TextIO | None = None,
    base: Path | None = None,
    clock: Callable[[], float] = time.monotonic,
    port_guessing: bool = False,
) -> MatrixResult:
    """
    Measure every ordered pair of C{kinds} with each client implementation of C{impls}.

    C{miredo_infra}: "server" and/or "relay" played by Miredo.  Stops starting measurements
    once C{max_seconds} have passed (the rest are "not run: time budget").  Every lab is torn
    down before this returns, also on errors and Ctrl-C.  C{port_guessing}: measure the cells
    L{wants_guess} names once more with port guessing on (L{MatrixResult.guess_trials}).
    """
    infra = {role: ("miredo" if role in miredo_infra else "teredonode") for role in ("server", "relay")}
    started = clock()
    result = MatrixResult(
        tuple(kinds),
        tuple(impls),
        infra,
        started=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        versions=versions(impls, infra),
        port_guessing=port_guessing,
    )

    def say(text: str) -> None:
        if progress is not None:
            print(text, file=progress, flush=True)

    try:
        for i, row in enumerate(kinds):
            columns = list(kinds[i:])
            if clock() - started > max_seconds:
                result.budget_exhausted = True
                break
            t0 = clock()
            lab = Lab.up(CUSTOM_PREFIX + f"{row},{row}", base=base)
            result.labs += 1
            try:
                say(f"lab {lab.prefix} for row {row} up in {clock() - t0:.2f}s")
                start_infra(lab, infra)
                for column in columns:
                    for impl in impls:
                        for a_to_b in (True, False) if column != row else (True,):
                            if clock() - started > max_seconds:
                                result.budget_exhausted = True
                                break
                            t1 = clock()
                            try:
                                trial = measure(lab, row, column, impl, a_to_b)
                            except LabError as e:
                                # One NAT or node that would not start spoils one cell, not the run.
                                src, dst = (row, column) if a_to_b else (column, row)
                                trial = Trial(src, dst, impl, note=f"lab error: {e}", measured=True)
                            result.trials[(impl, trial.src, trial.dst)] = trial
                            text = verdict(expectation(trial.src, trial.dst, client_extensions(impl)), trial)[0]
                            say(f"  {impl:<10} {trial.src:>26} -> {trial.dst:<26} {text}  [{clock() - t1:.1f}s]")
                            if port_guessing and wants_guess(trial, impl):
                                t1 = clock()
                                try:
                                    guess = measure(lab, row, column, impl, a_to_b, guessing=True)
                                except LabError as e:
                                    guess = Trial(trial.src, trial.dst, impl, note=f"lab error: {e}", measured=True)
                                result.guess_trials[(impl, guess.src, guess.dst)] = guess
                                say(f"  {'+guessing':<10} {guess.src:>26} -> {guess.dst:<26} "
                                    f"{guess_text(guess)}  [{clock() - t1:.1f}s]")
            finally:
                lab.down()
    finally:
        result.seconds = clock() - started
    for impl in impls:
        for src in kinds:
            for dst in kinds:
                if (impl, src, dst) not in result.trials:
                    result.trials[(impl, src, dst)] = Trial(src, dst, impl, note="not run: time budget")
    return result


def start_infra(lab: Lab, infra: dict[str, str]) -> None:
    """
    The server (with a Router Solicitation budget for the matrix's restarts) and the relay.
    """
    if infra["server"] == "miredo":
        lab.start_miredo("server", "server", "server")
    else:
        lab.start_teredonode("server", "server", "server", SERVER_SETTINGS)
    if infra["relay"] == "miredo":
        lab.start_miredo("relay", "relay", "relay")
    else:
        lab.start_teredonode("relay", "relay", "relay")
    if not lab.wait_udp_listening("server", 3544, 5.0):
        tail = " | ".join(lab.nodes["server"].log_tail(3))
        raise LabError(f"the server does not listen on UDP 3544: {tail or 'no output'}")


# ---------------------------------------------------------------- rendering

def _short(kind: str) -> str:
    return FIGURE1_NAMES.get(kind, kind)


def render_table(result: MatrixResult, impl: str) -> str:
    """
    One implementation's matrix as a Markdown table: rows the source's NAT, columns the
    destination's, each cell the measurement and, in brackets, Figure 1's expectation.
    """
    header = ["source ↓ / destination →", *(_short(k) for k in result.kinds)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for src in result.kinds:
        cells = [result.cell(impl, src, dst)[2] for dst in result.kinds]
        lines.append("| " + " | ".join([_short(src), *cells]) + " |")
    return "\n".join(lines)


def render_summary(result: MatrixResult, impl: str) -> str:
    counts = {"works": 0, "must": 0, "needs": 0, "needs_ok": 0, "no": 0, "no_ok": 0}
    for src in result.kinds:
        for dst in result.kinds:
            expect, trial, _, _ = result.cell(impl, src, dst)
            ok = bool(trial and trial.measured and trial.ok)
            if expect.must_work:
                counts["must"] += 1
                counts["works"] += ok
            elif expect.required is not None:
                counts["needs"] += 1
                counts["needs_ok"] += ok
            else:
                counts["no"] += 1
                counts["no_ok"] += ok
    ext = format_needs(result.extensions(impl)) or "none"
    return (
        f"{impl} clients (RFC 6081 extensions: {ext}): {counts['works']}/{counts['must']} cells that must work "
        f"work; {counts['needs_ok']}/{counts['needs']} cells needing a missing extension work anyway; "
        f"{counts['no_ok']}/{counts['no']} 'No' cells work"
    )


LEGEND = (
    "Each cell: `ok T` (a reply came; T from the first echo request to the first reply) or `no`, then in "
    "brackets RFC 6081 Figure 1's expectation for a client with the extensions it has: `Yes` "
    "(RFC 4380 alone), `needs EXT` (an extension the client lacks; not a failure), `No` (no "
    "connectivity). `FAIL` marks a cell that must work and did not."
)


def render_report(result: MatrixResult) -> str:
    """
    The whole text report: one table per client implementation, summaries, totals.
    """
    parts = [
        f"RFC 6081 Figure 1 measured {result.started}: {', '.join(f'{k} {v}' for k, v in result.versions.items())}; "
        f"server {result.infra['server']}, relay {result.infra['relay']}; "
        f"{PING_COUNT} echo requests per direction"
    ]
    for impl in result.impls:
        parts += ["", f"{impl} clients:", "", render_table(result, impl), "", render_summary(result, impl)]
    parts += ["", LEGEND]
    if result.port_guessing:
        parts += ["", render_guessing(result)]
    total = len(result.kinds) ** 2 * len(result.impls)
    measured = sum(1 for t in result.trials.values() if t.measured)
    parts.append(
        f"\n{measured}/{total} cells measured on {result.labs} labs in {result.seconds:.0f}s"
        + (" (time budget exhausted)" if result.budget_exhausted else "")
    )
    failures = result.failures()
    parts.append(
        f"{len(failures)} cell(s) that must work failed: "
        + ", ".join(f"{impl} {src} -> {dst}" for impl, src, dst in failures)
        if failures
        else "every cell that must work works"
    )
    return "\n".join(parts)


def guess_text(trial: Trial) -> str:
    """
    A port-guessing trial: C{ok T} (T to the first reply) or C{no}, or why nothing was measured.
    """
    if trial.note:
        return trial.note
    if trial.ok:
        text = f"ok {format_seconds(trial.first_reply)}" if trial.first_reply is not None else "ok"
        # Reached without a search: the longer ping, or luck, not port guessing.
        return text + (" (no search started)" if trial.searches == 0 else "")
    if trial.searches is not None:
        return "no (searched, missed)" if trial.searches else "no (no search started)"
    return "no"


def render_guessing(result: MatrixResult, impl: str = "teredonode") -> str:
    """
    What C{--port-guessing} measured, apart from the RFC verdict: the cells it turned into
    "yes" in this run with their times to the first reply, and those it did not.
    """
    trials = [result.guess_trials[key] for key in sorted(result.guess_trials) if key[0] == impl]
    order = {kind: i for i, kind in enumerate(KINDS)}
    trials.sort(key=lambda t: (order[t.src], order[t.dst]))
    if not trials:
        return f"Port guessing (beyond RFC 6081): no cell left for it ({impl} clients reached every cell measured, or none was measured)."
    reached = [t for t in trials if t.measured and t.ok]
    missed = [t for t in trials if not (t.measured and t.ok)]
    searched = [t for t in reached if t.searches]
    head = (
        f"Port guessing (beyond RFC 6081, `port-guessing = true` on both {impl} clients, n = m = 256 at "
        f"50 packets/s; not part of the verdict): of the {len(trials)} cells they did not reach with their "
        f"defaults, measured once more each from fresh clients and NATs ({GUESS_PINGS} echo requests "
        f"{GUESS_INTERVAL:g} s apart), {len(reached)} reached in this run"
        + (f", {len(searched)} of them after a search" if len(searched) != len(reached) else "")
    )
    lines = [head + (":" if reached else ".")]
    lines += [f"- {_short(t.src)} → {_short(t.dst)}: {guess_text(t)} ({t.received}/{t.sent} replies)" for t in reached]
    groups: dict[str, list[str]] = {}
    for t in missed:
        why = guess_text(t)
        label = {"no (searched, missed)": "searched, missed", "no (no search started)": "no search started"}.get(why, why)
        groups.setdefault(label, []).append(f"{_short(t.src)} → {_short(t.dst)}")
    lines += [f"- not reached, {label}: {'; '.join(cells)}" for label, cells in groups.items()]
    return "\n".join(lines)


MARK_BEGIN = "<!-- matrix:begin -->"
MARK_END = "<!-- matrix:end -->"


def render_doc_section(result: MatrixResult) -> str:
    """
    What goes between the markers of docs/nat-traversal.md.
    """
    command = (
        "teredo lab matrix"
        + (" --with-miredo client" if "miredo" in result.impls else "")
        + (" --port-guessing" if result.port_guessing else "")
    )
    lines = [
        f"Measured {result.started} with `{command}`: "
        f"{', '.join(f'{k} {v}' for k, v in result.versions.items())}; server {result.infra['server']}, "
        f"relay {result.infra['relay']}; our clients with default settings; "
        f"{PING_COUNT} echo requests per direction, each from fresh clients and NATs; "
        f"{result.labs} labs, {result.seconds:.0f} s in all.",
    ]
    for impl in result.impls:
        lines += ["", f"**{render_summary(result, impl)}.**", "", render_table(result, impl)]
    lines += ["", LEGEND]
    if result.port_guessing:
        lines += ["", render_guessing(result)]
    return "\n".join(lines)


def replace_between_markers(text: str, body: str) -> str:
    """
    C{text} with everything between L{MARK_BEGIN} and L{MARK_END} replaced by C{body}.
    """
    begin = text.find(MARK_BEGIN)
    end = text.find(MARK_END)
    if begin < 0 or end < begin:
        raise LabError(f"no {MARK_BEGIN} ... {MARK_END} markers in the document")
    return text[: begin + len(MARK_BEGIN)] + "\n" + body.strip("\n") + "\n" + text[end:]


def write_doc(path: Path, result: MatrixResult) -> None:
    try:
        text = path.read_text()
    except OSError as e:
        raise LabError(f"--write-doc: {e}") from None
    path.write_text(replace_between_markers(text, render_doc_section(result)))


def run_cli(
    *,
    quick: bool,
    kinds_text: str | None,
    miredo_roles: Sequence[str],
    as_json: bool,
    doc: str | None,
    max_seconds: float | None,
    from_json: str | None = None,
    port_guessing: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """
    C{teredo lab matrix}: exit 0 only when every cell that must work was measured and works
    (port guessing's cells never change that).  C{from_json}: render a result saved with
    C{--json} instead of measuring.  C{port_guessing}: C{--port-guessing} (L{run_matrix}).
    """
    for role in miredo_roles:
        if role not in ("server", "relay", "client"):
            raise LabError(f"--with-miredo: unknown role {role!r} (Miredo can play server, relay, client)")
    if from_json is not None:
        try:
            result = MatrixResult.from_json(json.loads(Path(from_json).read_text()))
        except (OSError, ValueError) as e:
            raise LabError(f"--from-json: {e}") from None
    else:
        kinds = parse_kinds(kinds_text, quick)
        impls = ("teredonode", "miredo") if "client" in miredo_roles else ("teredonode",)
        budget = max_seconds if max_seconds is not None else (QUICK_MAX_SECONDS if quick else DEFAULT_MAX_SECONDS)
        result = run_matrix(
            kinds,
            impls,
            [r for r in miredo_roles if r != "client"],
            max_seconds=budget,
            progress=err if as_json else out,
            port_guessing=port_guessing,
        )
    if as_json:
        json.dump(result.to_json(), out, indent=1)
        out.write("\n")
    else:
        print(file=out)
        print(render_report(result), file=out)
    if doc:
        write_doc(Path(doc), result)
        print(f"matrix written to {doc}", file=err if as_json else out)
    return 1 if result.failures() else 0


__all__ = [
    "EXTENSIONS", "FIGURE1_CELLS", "FIGURE1_MATRIX", "KINDS", "QUICK_KINDS", "Expectation", "MatrixResult",
    "Trial", "client_extensions", "expectation", "render_table", "replace_between_markers", "run_matrix",
]
