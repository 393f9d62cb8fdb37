"""
The network lab: every Teredo role on its own "host" (a Linux network namespace) behind real
kernel NATs, on one machine.

Teredo is only meaningful across real NATs, and the in-memory fakes of L{teredonode.testing}
can only check what we believe NATs do; the lab checks what the kernel's conntrack actually
does, and lets Miredo, the reference implementation, sit on the other side of every exchange.

Layout:
  - L{teredonode.lab.topology}: the address plan, namespaces, veth links, bridge, routes, sysctls;
  - L{teredonode.lab.nat}: nftables rule sets, one per NAT behaviour;
  - L{teredonode.lab.nodes}: Miredo and twistd node processes, their configs, logs, pidfiles;
  - L{teredonode.lab.state}: the on-disk record that lets any process tear a lab down;
  - L{teredonode.lab.lab}: L{Lab}, the handle that ties the above together;
  - L{teredonode.lab.scenario}, L{teredonode.lab.demo}, L{teredonode.lab.cli}: what operators run.

Everything the lab creates lives inside namespaces whose names carry a unique prefix; nothing
is created in, or routed to, the host's own network namespace.
"""
