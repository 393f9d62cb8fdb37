"""
Running the system tools the lab drives (C{ip}, C{nft}, C{conntrack}, ...).

One wrapper so that every call has an explicit argument list and a timeout, and every failure
becomes a one-line L{LabError} naming the command, instead of a traceback from C{subprocess}.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence

from teredonode.errors import LabError

DEFAULT_TIMEOUT = 20.0


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """
    Run C{argv}, capture its output as text, and raise L{LabError} on failure when C{check}.
    """
    try:
        result = subprocess.run(
            list(argv),
            input=input,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise LabError(f"command not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:g}s: {' '.join(argv)}") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {result.returncode}"
        raise LabError(f"{' '.join(argv)}: {last}")
    return result


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """
    The argument list running C{argv} inside network namespace C{ns}.
    """
    return ["ip", "netns", "exec", ns, *argv]


def which(tool: str) -> str | None:
    """
    Where C{tool} is, also looking in the sbin directories a non-login root shell may lack.
    """
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/local/sbin")
