"""
The Teredo roles.  Each lives in its own module, C{teredonode.roles.<module>}, exposing

    makeRole(settings, reactor) -> a provider of ITeredoRole and IService

where C{settings} is the role's validated table from L{teredonode.config} and C{node} the
C{[node]} table.  L{ROLE_MODULES} maps role names (as in config and C{--role}) to modules.
"""

ROLE_MODULES: dict[str, str] = {
    "server": "teredonode.roles.server",
    "client": "teredonode.roles.client",
    "relay": "teredonode.roles.relay",
    "host-relay": "teredonode.roles.hostrelay",
}

__all__ = ["ROLE_MODULES"]
