"""
The relay's and the client's TC programs share their hook: a packet that is not theirs goes
on to the next program attached there (TCX_NEXT), not straight to the kernel (TC_ACT_OK,
which ends the tcx chain), so a host's other TC programs (container networking, firewalls)
still see it.

In a namespace of its own, this module (run there as a script) attaches the program to a
veth's egress, then a second program after it that counts the IPv6 UDP packets it
sees, and sends datagrams that are not the fast path's (no peer, no served source): the
fast path must have run first and passed them on (its own count), and the second program
must have seen every one of them.

Root only, with clang, libbpf and ip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial import unittest
from tests.system.bpf_support import fast_path_skip_reason

REPO = Path(__file__).resolve().parents[2]
DEVICE = "tfc0"
DESTINATION = "2001:db8:5::2"
PORT = 9
DATAGRAMS = 5

#: The second program: counts the IPv6 UDP packets to PORT it sees, and passes them on.
OBSERVER = r"""
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("tc")
int observe(struct __sk_buff *skb)
{
	__u8 head[44]; /* the IPv6 header and UDP ports, after the veth's Ethernet header */
	__u32 zero = 0;
	__u64 *value;

	if (skb->protocol != bpf_htons(0x86DD) || bpf_skb_load_bytes(skb, 14, head, sizeof(head)))
		return TC_ACT_UNSPEC;
	if (head[6] != 17 || head[42] != 0 || head[43] != %d)
		return TC_ACT_UNSPEC;
	value = bpf_map_lookup_elem(&seen, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
""" % PORT


def _config(role: str, ifindex: int) -> tuple[Any, str, bytes, tuple[str, ...]]:
    """
    The role's control-plane module, its TX program, a config value that enables the
    programs but makes nothing on the veth theirs, and their counter names.
    """
    if role == "relay":
        from teredonode.fastpath import relay

        value = relay.CONFIG.pack(
            1, ifindex, ifindex, socket.inet_aton("192.0.2.1"), (3544).to_bytes(2, "big"),
            bytes.fromhex("20010000"), int(30e9), 0, 0, b"", bytes(256), b"", 0, 0,
        )
        return relay, relay.TX, value, relay.COUNTERS
    from teredonode.fastpath import client

    value = client.pack_config(
        ifindex, ifindex, "192.0.2.1", 3544, bytes.fromhex("20010000c0000201" + "00" * 8), ["192.0.2.1"]
    )
    return client, client.TX, value, client.COUNTERS


def run_in_namespace(role: str) -> dict[str, int]:
    """
    Attach the role's TX program, then the observer, to DEVICE's egress; send DATAGRAMS
    datagrams out of it; what each program counted.
    """
    from teredonode.fastpath.build import compile_object
    from teredonode.fastpath.libbpf import BpfObject, load_libbpf, per_cpu_counts
    from teredonode.fastpath.program import object_path

    ifindex = socket.if_nametoindex(DEVICE)
    module, tx, value, names = _config(role, ifindex)
    lib = load_libbpf()
    with BpfObject(lib, str(object_path(source_name=module.SOURCE_NAME)), {"peers": 16}) as ours:
        ours.update(ours.map_fd("config"), (0).to_bytes(4, "little"), value)
        ours.attach_tcx(tx, ifindex, egress=True)
        tmp = Path(tempfile.mkdtemp(prefix="teredo-tcx-chain-"))
        try:
            (tmp / "observe.bpf.c").write_text(OBSERVER)
            compile_object(tmp / "observe.bpf.c", tmp / "observe.bpf.o")
            with BpfObject(lib, str(tmp / "observe.bpf.o")) as observer:
                observer.attach_tcx("observe", ifindex, egress=True)  # appended: after ours
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                    for _ in range(DATAGRAMS):
                        s.sendto(b"not the fast path's", (DESTINATION, PORT))
                raw = observer.lookup(observer.map_fd("seen"), (0).to_bytes(4, "little"), 8)
                counts = per_cpu_counts(ours, ours.map_fd("counters"), names, ours.possible_cpus())
        finally:
            shutil.rmtree(tmp, True)
    assert raw is not None
    return {"seen-after": int.from_bytes(raw, "little"), **counts}


def _ip(*argv: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run(prefix + ["ip", *argv], check=True, capture_output=True, timeout=20)


class TCChainTests(unittest.TestCase):
    skip = fast_path_skip_reason("ip")

    def setUp(self) -> None:
        self.ns = f"tfc{secrets.token_hex(3)}"
        _ip("netns", "add", self.ns)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", self.ns], capture_output=True)
        _ip("link", "add", DEVICE, "type", "veth", "peer", "name", DEVICE + "p", ns=self.ns)
        for dev in (DEVICE, DEVICE + "p"):
            _ip("link", "set", dev, "up", ns=self.ns)
        _ip("-6", "addr", "add", "2001:db8:5::1/64", "dev", DEVICE, "nodad", ns=self.ns)
        _ip("-6", "neigh", "add", DESTINATION, "lladdr", "02:00:00:00:00:02", "dev", DEVICE, "nud", "permanent", ns=self.ns)

    def counts(self, role: str) -> dict[str, int]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
        done = subprocess.run(
            ["ip", "netns", "exec", self.ns, sys.executable, "-m", "tests.system.test_fastpath_relay_chain", role],
            capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        result: dict[str, int] = json.loads(done.stdout)
        return result

    def test_relayPassesOn(self) -> None:
        """
        The relay's TX program hands what is not its own to the next program on the hook.
        """
        counts = self.counts("relay")
        self.assertGreaterEqual(counts["passed-tun"], DATAGRAMS, counts)
        self.assertEqual(counts["seen-after"], DATAGRAMS, counts)

    def test_clientPassesOn(self) -> None:
        """
        So does the client's.
        """
        counts = self.counts("client")
        self.assertGreaterEqual(counts["passed-tun"], DATAGRAMS, counts)
        self.assertEqual(counts["seen-after"], DATAGRAMS, counts)


if __name__ == "__main__":
    print(json.dumps(run_in_namespace(sys.argv[1])))
