"""shortpath: reverse connect + UDP upgrade + fallback.

Public entry points:

* :func:`shortpath.client.connect` -- a client opens a session to a resource.
* :class:`shortpath.host.HostAgent` -- a host registers and serves sessions.
* :class:`shortpath.gateway.Gateway` -- the gateway (with its broker).
"""

__version__ = "0.1.0"
