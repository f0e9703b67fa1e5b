"""How a session's bytes travel: one module per path kind.

* tcp_relay.py -- the TCP relay through the gateway, with end-to-end TLS inside.
* udp*.py / managed.py -- UDP paths (aiortc/aioice live only there).

Every path offers the :class:`~shortpath.transport.base.Path` interface, so
the session layer does not care which one it is using.
"""
