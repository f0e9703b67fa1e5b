"""TURN credentials are short-lived and re-minted while the session lives (issue #11 item 5).

The broker mints ``<expiry>:<session id>`` credentials with ``credential_ttl``; on each host
heartbeat it re-mints those past half their lifetime and sends them on the host's control
channel; the host hands them to the client inside the session. After the session ends
nothing is re-minted, so a leaked credential works ``credential_ttl`` at most.
"""

import asyncio
import base64
import hashlib
import hmac
import time

from shortpath.config import TurnConfig
from shortpath.demo import LocalStack
from shortpath.session.session import TURN_CREDENTIALS

from tests.conftest import FAST

SECRET = "not-a-real-coturn-secret"


def _valid(user: str, password: str) -> bool:
    want = base64.b64encode(hmac.new(SECRET.encode(), user.encode(), hashlib.sha1).digest()).decode()
    return hmac.compare_digest(want, password)


async def test_credentials_are_reminted_to_both_peers_while_the_session_lives(tmp_path):
    turn = TurnConfig(turn="127.0.0.1:3478", secret=SECRET, credential_ttl=2.0)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, turn=turn, managed=False) as stack:
        async with await stack.connect(shortpath=False) as s:
            first = dict(s.policy["ice"])
            assert first["username"].split(":", 1)[1] == s.session_id and _valid(first["username"], first["password"])
            # wait for two re-mints to reach the client (events, not a sleep)
            got: asyncio.Queue = asyncio.Queue()
            handler = s._signal_handlers[TURN_CREDENTIALS]

            def spy(msg):
                handler(msg)
                got.put_nowait(dict(s.policy["ice"]))
            s._signal_handlers[TURN_CREDENTIALS] = spy
            seen = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
            for ice in seen:
                expiry, label = ice["username"].split(":", 1)
                assert label == s.session_id and _valid(ice["username"], ice["password"])
                assert time.time() - 1 <= int(expiry) <= time.time() + 2 + 1
            assert seen[0]["username"] != first["username"]
            # the host's copy is the newest one too
            host_sess = stack.hosts[0].sessions[s.session_id]
            assert host_sess.policy["ice"]["username"] in {i["username"] for i in seen} | {
                s.policy["ice"]["username"]}
            sid = s.session_id
        # after the session: no credential is re-minted for it
        broker = stack.gateway.broker
        for _ in range(100):
            if sid not in broker.sessions:
                break
            await asyncio.sleep(0.01)
        assert sid not in broker.sessions
        assert broker.turn_refresh("host-1") == []


async def test_a_client_ignores_credentials_for_another_session(tmp_path):
    turn = TurnConfig(turn="127.0.0.1:3478", secret=SECRET, credential_ttl=600.0)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, turn=turn, managed=False) as stack:
        async with await stack.connect(shortpath=False) as s:
            before = dict(s.policy["ice"])
            s._signal_handlers[TURN_CREDENTIALS]({"type": TURN_CREDENTIALS, "username": "9999999999:other",
                                                   "password": "x"})
            s._signal_handlers[TURN_CREDENTIALS]({"type": TURN_CREDENTIALS, "username": 5, "password": None})
            assert s.policy["ice"] == before
