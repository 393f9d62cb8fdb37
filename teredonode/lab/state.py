"""
The on-disk record of a lab, so that C{teredo lab down} from any process (or after a crash)
can remove exactly what a lab made and nothing else.

Resources are recorded I{before} they are created: a crash between the two leaves a record of
something that may not exist, which teardown tolerates, never something that exists unrecorded.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from teredonode.errors import LabError

STATE_DIR_ENV = "TEREDO_LAB_STATE_DIR"
DEFAULT_STATE_DIR = Path("/run/teredonode-lab")
STATE_FILE = "state.json"


def state_dir() -> Path:
    """
    Where labs are recorded: C{$TEREDO_LAB_STATE_DIR} or C{/run/teredonode-lab} (tmpfs, so a
    reboot, which also removes every namespace, forgets the labs too).
    """
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def new_prefix() -> str:
    """
    A short unique name prefix ("tn" + 5 hex digits): short because interface and namespace
    names end up in 15-character kernel fields, random so that concurrent labs never collide.
    """
    return "tn" + secrets.token_hex(3)[:5]


@dataclass
class ProcessRecord:
    node: str
    ns: str
    argv: list[str]
    pid: int
    pidfile: str
    log: str


@dataclass
class LabState:
    prefix: str
    scenario: str
    directory: str
    created: float = field(default_factory=time.time)
    creator_pid: int = field(default_factory=os.getpid)
    namespaces: list[str] = field(default_factory=list)
    processes: dict[str, ProcessRecord] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def save(self) -> None:
        """
        Write the record atomically (temporary file + rename), so a reader never sees half.
        """
        data = asdict(self)
        tmp = self.path / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        tmp.replace(self.path / STATE_FILE)

    @classmethod
    def create(cls, scenario: str, base: Path | None = None) -> "LabState":
        base = base or state_dir()
        for _ in range(10):
            prefix = new_prefix()
            directory = base / prefix
            try:
                directory.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                continue
            for sub in ("logs", "run", "conf"):
                (directory / sub).mkdir()
            state = cls(prefix=prefix, scenario=scenario, directory=str(directory))
            state.save()
            return state
        raise LabError(f"could not find a free lab name under {base}")

    @classmethod
    def load(cls, directory: Path) -> "LabState":
        try:
            data = json.loads((directory / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"cannot read lab state in {directory}: {e}") from None
        processes = {k: ProcessRecord(**v) for k, v in data.pop("processes", {}).items()}
        return cls(processes=processes, **data)


def recorded_labs(base: Path | None = None) -> list[LabState]:
    """
    Every lab recorded under the state directory, oldest first.
    """
    base = base or state_dir()
    if not base.is_dir():
        return []
    labs = []
    for child in sorted(base.iterdir()):
        if (child / STATE_FILE).is_file():
            try:
                labs.append(LabState.load(child))
            except LabError:
                continue
    return sorted(labs, key=lambda s: s.created)
