"""How a session's bytes travel: one module per path kind.

* base.py      -- the Path interface every path offers to the session layer.
* tcp_relay.py -- the TCP relay through the gateway, with end-to-end TLS inside.
* udp/         -- the UDP paths (managed, direct, TURN): ICE + DTLS + SCTP; the only
  package that imports aioice/aiortc.

Every path offers the :class:`~shortpath.transport.base.Path` interface, so
the session layer does not care which one it is using.
"""
