"""TURN REST credentials against a real coturn (loopback): what is enforced and by whom.

The broker mints ``username = "<expiry>:<session id>"`` and
``password = base64(HMAC-SHA1(secret, username))`` per launch (auth/turn.py).

What coturn enforces (``use-auth-secret``), tested here:
* expiry: a username whose timestamp has passed gets 401, also for a credential that
  worked a moment earlier;
* integrity of the whole username: the session label cannot be swapped for another
  session's (or the expiry pushed out) without the secret -- 401;
* only the shared secret mints credentials -- 401 for any other key.

What coturn cannot enforce: it does not know sessions. The label is opaque to it, so
whoever holds an unexpired pair (the two peers of that session, by design) can
allocate from any address, more than once, until the expiry; coturn's only levers are
``user-quota`` (allocations per username) and the TTL itself. The binding to a session
is therefore the broker's: each launch gets its own label and password, handed only to
that session's two peers over their TLS channels, with a short TTL (``credential_ttl``).
``test_an_unexpired_credential_is_not_tied_to_an_address`` pins that limitation down
so a change in it (e.g. a user-quota) is noticed.
"""

import asyncio
import time

import aioice.stun
import aioice.turn
import pytest

from shortpath.auth.turn import rest_credentials
from shortpath.config import TurnConfig
from shortpath.demo import LocalStack

from tests.conftest import FAST

coturn_mod = pytest.importorskip("netns_lab.coturn")


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory):
    import shutil
    if not shutil.which(coturn_mod.TURNSERVER):
        pytest.skip("coturn (turnserver) not installed")
    # verbose: coturn logs each message it handles, so a failed allocation below can tell
    # "refused" from "never answered" (the log tail goes into the failure message).
    srv = coturn_mod.start_loopback(tmp_path_factory.mktemp("coturn"), verbose=True)
    try:
        yield srv
        # verbose logs usernames; the shared secret must still not be in it
        assert srv.secret not in srv.log_file.read_text()
    finally:
        srv.stop()


# How long one allocation may take. aioice retransmits a request 0.5, 1.5, 3.5, 7.5, 15.5 and
# 31.5 s after sending it; 30 s lets five retransmissions of each of the two requests (the
# unauthenticated one and the retry after 401) go out. An allocation here takes a few ms; a
# CI run once saw coturn answer the first request and then nothing within 10 s (one run of
# many; not reproduced in 185 runs of this module, 160 of them with two busy loops on the CPU).
ALLOCATE_TIMEOUT = 30.0


async def _allocate(srv, user: str, password: str, keep: list | None = None):
    """A TURN allocation with these credentials: the relayed address, or the STUN error code.
    The allocation is released at once, unless ``keep`` is given: its transport goes there."""
    try:
        transport, _ = await asyncio.wait_for(aioice.turn.create_turn_endpoint(
            asyncio.DatagramProtocol, (srv.host, srv.port), user, password), ALLOCATE_TIMEOUT)
    except aioice.stun.TransactionFailed as exc:
        return exc.response.attributes["ERROR-CODE"][0]
    except asyncio.TimeoutError:
        pytest.fail(f"coturn gave no final answer to an allocation by {user!r} within "
                    f"{ALLOCATE_TIMEOUT:.0f} s{srv.log_tail(30)}")
    relayed = transport.get_extra_info("sockname")   # the relayed transport address
    if keep is None:
        transport.close()
    else:
        keep.append(transport)
    return relayed


async def test_valid_credential_allocates_and_expired_one_is_refused(turn_server):
    now = time.time()
    user, pwd = rest_credentials(turn_server.secret, "s1", 60, now)
    relayed = await _allocate(turn_server, user, pwd)
    assert isinstance(relayed, tuple) and turn_server.relay_range[0] <= relayed[1] <= turn_server.relay_range[1]
    old_user, old_pwd = rest_credentials(turn_server.secret, "s1", 60, now - 120)   # expired a minute ago
    assert await _allocate(turn_server, old_user, old_pwd) == 401


async def test_short_lived_credential_stops_working_at_its_expiry(turn_server):
    user, pwd = rest_credentials(turn_server.secret, "s2", 2, time.time())
    assert isinstance(await _allocate(turn_server, user, pwd), tuple)
    expiry = int(user.split(":")[0])
    while time.time() <= expiry + 1:      # waiting on the wall clock is the point here
        await asyncio.sleep(0.2)
    assert await _allocate(turn_server, user, pwd) == 401


async def test_credential_cannot_be_relabelled_or_extended_or_forged(turn_server):
    now = time.time()
    user, pwd = rest_credentials(turn_server.secret, "session-a", 60, now)
    expiry, label = user.split(":", 1)
    assert await _allocate(turn_server, f"{expiry}:session-b", pwd) == 401          # another session
    assert await _allocate(turn_server, f"{int(expiry) + 3600}:{label}", pwd) == 401  # pushed expiry
    forged_user, forged_pwd = rest_credentials("not-the-secret", "session-a", 60, now)
    assert await _allocate(turn_server, forged_user, forged_pwd) == 401


async def test_an_unexpired_credential_is_not_tied_to_an_address(turn_server):
    # Documented limitation (module docstring): two allocations from two different
    # sockets with one credential both succeed; only the TTL bounds its use.
    # Both allocations are alive at once, as the limitation says (two holders of one
    # credential); released one by one, the two addresses would only show coturn's port choice.
    user, pwd = rest_credentials(turn_server.secret, "s3", 60, time.time())
    held: list = []
    try:
        a = await _allocate(turn_server, user, pwd, keep=held)
        b = await _allocate(turn_server, user, pwd, keep=held)
        assert isinstance(a, tuple) and isinstance(b, tuple) and a != b
    finally:
        for transport in held:
            transport.close()


async def test_broker_binds_each_credential_to_its_session_and_ttl(tmp_path, turn_server):
    turn = TurnConfig(stun=f"127.0.0.1:{turn_server.port}", turn=f"127.0.0.1:{turn_server.port}",
                      secret=turn_server.secret, credential_ttl=30)
    async with LocalStack(str(tmp_path), hosts=1, timing=FAST, turn=turn, managed=False) as stack:
        plans = []
        real = stack.gateway.broker.plan_launch

        def record(claims, resource):
            plan = real(claims, resource)
            plans.append(plan)
            return plan
        stack.gateway.broker.plan_launch = record
        a = await stack.connect(shortpath=False)
        b = await stack.connect(user="bob", shortpath=False)
        try:
            creds = [(p.session_id, p.policy["ice"]["username"], p.policy["ice"]["password"], p.created)
                     for p in plans]
            assert len(creds) == 2
            (sid_a, user_a, pwd_a, t_a), (sid_b, user_b, pwd_b, _) = creds
            assert user_a.split(":", 1)[1] == sid_a and user_b.split(":", 1)[1] == sid_b
            assert pwd_a != pwd_b
            assert int(user_a.split(":")[0]) == int(t_a + 30)          # expiry = launch + credential_ttl
            # each works at coturn; session b's holder cannot turn a's label into a working one
            assert isinstance(await _allocate(turn_server, user_a, pwd_a), tuple)
            assert await _allocate(turn_server, f"{user_b.split(':')[0]}:{sid_a}", pwd_b) == 401
        finally:
            await a.close()
            await b.close()
