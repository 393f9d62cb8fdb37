"""
teredonode's tests, in three tiers: C{tests.unit} (pure), C{tests.protocol} (roles on the
in-memory network with a Clock), C{tests.system} (real namespaces, TUN, nft, twistd; root).

Hypothesis runs derandomized so CI is deterministic (the same profile Twisted uses).
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "teredonode",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    max_examples=200,
)
settings.load_profile("teredonode")
