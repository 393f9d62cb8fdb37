"""
Least privilege in the lab: every role of ours runs unprivileged once started, keeps only
the capabilities C{docs/least-privilege.md} lists (L{teredonode.privilege.ROLE_CAPABILITIES}),
and still does its job:

  - server, relay, host-relay and client each run with a uid other than 0 and their
    C{CapEff}/C{CapPrm}/C{CapBnd} exactly the role's set (the relay started through twistd's own
    C{--uid}/C{--gid}, the others through C{[node] user}/C{group});
  - a client qualifies against our unprivileged server and pings v6host through our
    unprivileged relay (and v6host pings it back);
  - the client's NAT changes its mapping (switched to the symmetric rule set, then back):
    the unprivileged client re-addresses its TUN each time.

Every wait is a poll with a deadline; every ping is bounded by its own count and timeout.
"""

from __future__ import annotations

import os
import pwd
import time

from twisted.trial import unittest

from teredonode.lab.nodes import NODE_USER
from teredonode.privilege import ROLE_CAPABILITIES, capabilityMask, maskNames
from tests.system.lab_fixture import LabAssertions, use_lab
from tests.system.test_client_interop import global_addresses

QUALIFY_TIMEOUT = 20.0
REFRESH = 10
RECOVERY_DEADLINE = 2 * REFRESH


def process_status(path: str) -> dict[str, str]:
    with open(f"/proc/{path}/status") as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


class LeastPrivilegeTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        self.lab.set_nat_mode("nat1", "port-restricted")
        self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_teredonode("our-server", "server", "server")
        self.waitStatus("our-server", lambda s: s["server"]["state"] == "serving", 15, "serving")

    def assertUnprivileged(self, node: str, role: str) -> None:
        """
        C{node}'s process, every thread of it (capabilities are per thread), runs as the
        lab's user with exactly C{role}'s capabilities.
        """
        pid = self.lab.nodes[node].record.pid
        tasks = os.listdir(f"/proc/{pid}/task")
        self.assertIn(str(pid), tasks)
        for task in tasks:
            self.assertTaskUnprivileged(f"{node} task {task}", role, process_status(f"{pid}/task/{task}"))

    def assertTaskUnprivileged(self, node: str, role: str, status: dict[str, str]) -> None:
        nobody = pwd.getpwnam(NODE_USER).pw_uid
        self.assertEqual(status["Uid"].split(), [str(nobody)] * 4, f"{node}: Uid {status['Uid']}")
        self.assertNotIn("0", status["Gid"].split(), f"{node}: Gid {status['Gid']}")
        self.assertNotIn("0", status["Groups"].split(), f"{node}: Groups {status['Groups']}")
        wanted = capabilityMask(ROLE_CAPABILITIES[role])
        for field in ("CapEff", "CapPrm", "CapBnd"):
            have = int(status[field], 16)
            self.assertEqual(
                have, wanted, f"{node} ({role}) {field}: {maskNames(have)}, wanted {maskNames(wanted)}"
            )
        self.assertEqual(int(status["CapAmb"], 16), 0)

    def waitQualified(self, node: str) -> str:
        status = self.waitStatus(node, lambda s: s["client"]["state"] == "qualified", QUALIFY_TIMEOUT, "qualified")
        address: str = status["client"]["address"]
        return address

    def test_every_role_unprivileged_and_serving(self) -> None:
        """
        Server, relay (via twistd --uid/--gid), host-relay and client all run as nobody
        with their documented capabilities; the client qualifies against the server and
        reaches v6host through the relay, both ways.
        """
        self.lab.start_teredonode("our-relay", "relay", "relay", drop="twistd")
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")
        self.lab.start_teredonode("our-hr", "dualhost", "host-relay")
        self.waitStatus("our-hr", lambda s: s["host-relay"]["state"] == "relaying", 15, "relaying")
        self.lab.start_teredonode("ours-client1", "client1", "client")
        address = self.waitQualified("ours-client1")

        for node, role in [
            ("our-server", "server"),
            ("our-relay", "relay"),
            ("our-hr", "host-relay"),
            ("ours-client1", "client"),
        ]:
            self.assertUnprivileged(node, role)

        logs = ("our-server", "our-relay", "ours-client1")
        before = self.lab.node_status("our-relay")["relay"]["counters"]
        self.assertPings("client1", self.lab.ipv6("v6host"), logs=logs)
        self.assertPings("v6host", address, logs=logs)
        after = self.lab.node_status("our-relay")["relay"]["counters"]
        self.assertGreater(after["delivered"], before["delivered"])
        self.assertGreater(after["sent"], before["sent"])

    def test_unprivileged_client_readdresses(self) -> None:
        """
        The NAT in front of the client changes its mapping twice; the client, as nobody
        with CAP_NET_ADMIN alone, puts each new address on its TUN and removes the old.
        """
        self.lab.start_teredonode("our-relay", "relay", "relay")
        self.waitStatus("our-relay", lambda s: s["relay"]["state"] == "relaying", 15, "relaying")
        node = "ours-client1"
        self.lab.start_teredonode(node, "client1", "client", {"refresh": REFRESH})
        old = self.waitQualified(node)
        self.assertUnprivileged(node, "client")
        for mode in ("symmetric", "port-restricted"):
            self.lab.set_nat_mode("nat1", mode)
            status = self.waitStatus(
                node, lambda s: s["client"]["address"] not in (None, old), RECOVERY_DEADLINE + 10, "re-mapped"
            )["client"]
            new = status["address"]
            deadline = time.monotonic() + 5
            while global_addresses(self.lab, "client1") != {new}:
                if time.monotonic() > deadline:
                    self.fail(f"TUN has {global_addresses(self.lab, 'client1')}, status says {new}")
                time.sleep(0.1)
            self.assertEqual(self.lab.node_status(node)["client"]["counters"].get("netconfig-errors", 0), 0)
            old = new
        self.assertUnprivileged(node, "client")
        self.assertPings("v6host", old, logs=(node, "our-relay", "our-server"))
