"""TURN REST credentials (coturn ``use-auth-secret``).

The broker mints a username/password pair per session from a secret it shares
with coturn; coturn recomputes the password from the username, so no static
TURN password is ever handed out. Format (coturn's TURN REST scheme):
``username = "<expiry unix time>:<label>"``,
``password = base64(HMAC-SHA1(secret, username))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def rest_credentials(secret: str, label: str, ttl: float, now: float) -> tuple[str, str]:
    username = f"{int(now + ttl)}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
