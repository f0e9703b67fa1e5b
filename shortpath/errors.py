"""Every error shortpath raises derives from :class:`ShortpathError`.

The split says *who is at fault*, so callers can react without string matching:

* :class:`LocalError`   -- the caller misused an API (closed session, bad argument).
* :class:`RemoteError`  -- the peer broke the protocol (malformed/oversized/unknown frame,
  bad handshake). The connection it came from is closed; nobody else is touched.
* :class:`AuthError`    -- a token, fingerprint or identity check failed.
* :class:`PathError`    -- a transport path could not be set up or died.
* :class:`ConfigError`  -- invalid configuration, detected at start-up.
* :class:`NoResourcesError` -- the broker found nothing assignable; ``reason`` says why.
* :class:`SessionClosed` -- the session ended; ``reason`` tells the application why.

Errors carry a short machine-readable ``code`` that also travels on the wire
(in ``error`` control messages), so a client can show the same reason the
gateway logged.
"""

from __future__ import annotations


class ShortpathError(Exception):
    """Base of every shortpath error."""

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class LocalError(ShortpathError):
    """The caller did something the API does not allow."""

    code = "local"


class BufferFull(LocalError):
    """A send would exceed a path's queue limit: the caller ignored back-pressure."""

    code = "buffer-full"


class RemoteError(ShortpathError):
    """The peer sent something that breaks the protocol."""

    code = "protocol"


class FrameTooLarge(RemoteError):
    code = "frame-too-large"


class MalformedFrame(RemoteError):
    code = "malformed-frame"


class UnknownFrame(RemoteError):
    code = "unknown-frame"


class AuthError(ShortpathError):
    """A token, fingerprint or identity check failed."""

    code = "auth"


class TokenExpired(AuthError):
    code = "token-expired"


class BadSignature(AuthError):
    code = "bad-signature"


class WrongAudience(AuthError):
    code = "wrong-audience"


class NotAssigned(AuthError):
    code = "not-assigned"


class FingerprintMismatch(AuthError):
    code = "fingerprint-mismatch"


class TicketReplayed(AuthError):
    """A single-use resume ticket (auth/resume.py) was presented a second time."""

    code = "ticket-replayed"


class WrongClient(AuthError):
    """A resume ticket presented without proof of the key it is bound to: the
    ticket was sniffed or stolen, or belongs to another session."""

    code = "wrong-client"


class PathError(ShortpathError):
    """A transport path could not be set up, or died."""

    code = "path"


class ConfigError(ShortpathError):
    code = "config"


class NoResourcesError(ShortpathError):
    """The broker found no assignable host. ``reason`` is one of
    ``none-registered``, ``all-full``, ``all-draining``, ``all-unavailable``,
    ``not-assigned``, ``unknown-resource`` (or a mix, comma separated)."""

    code = "no-resources"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"no resources available: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class SessionClosed(ShortpathError):
    """The session has ended. ``reason`` is a short code, e.g. ``host-gone``."""

    code = "session-closed"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"session closed: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class RateLimited(ShortpathError):
    code = "rate-limited"


class BrokerUnavailable(ShortpathError):
    """The gateways' shared broker store (Redis, issue #14) cannot be reached: no
    new launch can be booked now; live sessions are not affected. Retry later."""

    code = "broker-unavailable"


# Map wire codes back to classes, so an ``error`` message from the gateway
# is raised on the client as the same type the gateway meant.
_BY_CODE: dict[str, type[ShortpathError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, ShortpathError):
        _BY_CODE.setdefault(_cls.code, _cls)


def from_wire(code: str, message: str, reason: str = "") -> ShortpathError:
    """Rebuild an error received in an ``error`` control message."""
    cls = _BY_CODE.get(code, RemoteError)
    if cls is NoResourcesError or cls is SessionClosed:
        err = cls(reason or "unknown")
        if message:
            # The sender's whole sentence already names the reason ("no resources
            # available: draining (host-1: draining)"): keep it as it is instead of
            # wrapping it in a second "no resources available: draining (...)".
            err.args = (message,)
        return err
    err = cls(message)
    err.code = code
    return err
