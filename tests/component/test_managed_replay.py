"""Managed listener vs. replayed STUN checks, and a real address move (issue #11 item 2).

Real sockets on loopback, a real client (aioice) and host (ManagedListener) session:

* the client's nominating check, captured and resent from a foreign socket, is dropped
  unanswered; the host's DTLS keeps going to the client;
* the same replay once the listener has forgotten the transaction id only starts a consent
  check, which the foreign socket cannot answer (a forged answer is refused): no DTLS ever
  goes there and the session stays put;
* a client whose NAT mapping changes (a forwarding "NAT" socket between client and listener
  switches to a new source port) is followed, after our consent check is answered and
  authenticated DTLS arrives from the new address.
"""

from __future__ import annotations

import asyncio
import os
import socket

import aioice.stun as stun
import pytest

from conftest_udp import LOOPBACK, assert_no_leaked_tasks, make_pair
from shortpath.transport.udp import UdpConfig
from shortpath.transport.udp.consent import BindingLimits
from shortpath.transport.udp.managed import ManagedListener

MANAGED = UdpConfig(allow_direct=False, allow_turn=False, host_addresses=LOOPBACK, connect_timeout=10)


def _record_checks(listener: ManagedListener) -> list:
    """Every Binding request the listener receives: (bytes, source, has USE-CANDIDATE)."""
    seen = []
    real = listener._on_datagram

    def spy(data: bytes, addr):
        if data[:2] == b"\x00\x01":
            try:
                msg = stun.parse_message(data)
                seen.append((data, addr, "USE-CANDIDATE" in msg.attributes))
            except ValueError:
                pass
        real(data, addr)
    listener._on_datagram = spy
    return seen


async def _echo(client, host, n: int) -> None:
    """n numbered messages client -> host -> client, all back in order."""
    got: list[int] = []
    done = asyncio.Event()
    host.on_reliable = host.send_reliable

    def on(data: bytes) -> None:
        got.append(int(data))
        if len(got) == n:
            done.set()
    client.on_reliable = on
    for i in range(n):
        client.send_reliable(b"%d" % i)
    await asyncio.wait_for(done.wait(), 30)
    assert got == list(range(n))


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


def _foreign() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def test_replayed_nominating_check_does_not_move_the_session():
    async with ManagedListener("127.0.0.1", 0) as listener:
        checks = _record_checks(listener)
        pair = make_pair(MANAGED, listener=listener)
        foreign = _foreign()
        try:
            client, host = await pair.connect()
            assert host.kind == "udp-managed"
            nominating = [c for c in checks if c[2]]
            assert nominating, checks
            data, client_addr, _ = nominating[0]
            before = listener.stats()
            for _ in range(20):
                foreign.sendto(data, listener.address)
            await _echo(client, host, 200)
            stats = listener.stats()
            assert stats.get("drop_stun_replayed", 0) - before.get("drop_stun_replayed", 0) == 20
            assert pair.host._managed.remote_addr == client_addr
            assert _drain(foreign) == []          # no STUN answer, no DTLS
            assert stats["learned_addresses"] == 1
        finally:
            foreign.close()
            await pair.close()
    await assert_no_leaked_tasks()


async def test_replay_after_the_id_is_forgotten_needs_consent_that_a_replayer_cannot_give():
    limits = BindingLimits(txid_ttl=0.3, consent_rto=0.1, consent_attempts=3, min_move_interval=0.0)
    async with ManagedListener("127.0.0.1", 0, binding_limits=limits) as listener:
        checks = _record_checks(listener)
        pair = make_pair(MANAGED, listener=listener)
        foreign = _foreign()
        try:
            client, host = await pair.connect()
            data, client_addr, _ = [c for c in checks if c[2]][0]
            await _echo(client, host, 20)
            await asyncio.sleep(0.4)   # let the transaction id expire (a clock, not a wait for work)
            foreign.sendto(data, listener.address)
            # the replayer sees our answer and our consent request; it answers with a forged response
            loop = asyncio.get_running_loop()
            got = []
            while not any(g[:2] == b"\x00\x01" for g in got):
                got.append(await asyncio.wait_for(loop.sock_recv(foreign, 4096), 5))
            request = stun.parse_message([g for g in got if g[:2] == b"\x00\x01"][0])
            assert request.attributes["USERNAME"] == f"{pair.client.local_ufrag}:{pair.host.local_ufrag}"
            forged = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                  transaction_id=request.transaction_id)
            forged.attributes["XOR-MAPPED-ADDRESS"] = foreign.getsockname()
            forged.add_message_integrity(os.urandom(16))
            foreign.sendto(bytes(forged), listener.address)
            # DTLS the replayer sends now does not reach the session either
            for _ in range(10):
                foreign.sendto(bytes([23, 0xFE, 0xFD]) + os.urandom(60), listener.address)
            await _echo(client, host, 200)
            stats = listener.stats()
            assert stats.get("consent_checks_started", 0) == 1
            assert stats.get("drop_consent_bad_integrity", 0) == 1
            assert stats.get("consent_granted", 0) == 0 and stats.get("session_moved", 0) == 0
            assert pair.host._managed.remote_addr == client_addr
            leftovers = got + _drain(foreign)
            assert leftovers and all(g[0] < 4 for g in leftovers), leftovers   # STUN only, never DTLS
        finally:
            foreign.close()
            await pair.close()
    await assert_no_leaked_tasks()


class _Nat:
    """A forwarding socket pair between the client and the listener: the client talks to
    ``public`` (advertised as the listener); traffic to the listener leaves from ``mapping``,
    which ``rebind()`` replaces with a new socket (a NAT whose mapping changed)."""

    def __init__(self, listener_addr, public_ip: str) -> None:
        self.listener_addr = listener_addr
        self.public = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.public.bind((public_ip, listener_addr[1]))
        self.public.setblocking(False)
        self.client_addr = None
        self.mapping = None
        self.old = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.public, self._from_client)
        self._new_mapping()

    def _new_mapping(self) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        loop.add_reader(s, self._from_listener, s)
        if self.mapping is not None:
            loop.remove_reader(self.mapping)
            self.old.append(self.mapping)      # kept open but deaf: the old mapping is gone
        self.mapping = s

    def rebind(self) -> tuple[str, int]:
        self._new_mapping()
        return self.mapping.getsockname()

    def _from_client(self) -> None:
        while True:
            try:
                data, addr = self.public.recvfrom(65535)
            except BlockingIOError:
                return
            self.client_addr = addr
            self.mapping.sendto(data, self.listener_addr)

    def _from_listener(self, s: socket.socket) -> None:
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                return
            if self.client_addr is not None:
                self.public.sendto(data, self.client_addr)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.public)
        loop.remove_reader(self.mapping)
        for s in (self.public, self.mapping, *self.old):
            s.close()


async def test_a_real_nat_rebinding_is_followed_after_consent_and_authenticated_dtls():
    async with ManagedListener("127.0.0.1", 0, advertise=["127.0.0.2"]) as listener:
        nat = _Nat(listener.address, "127.0.0.2")
        nat.start()
        pair = make_pair(MANAGED, listener=listener)
        try:
            client, host = await pair.connect()
            first = pair.host._managed.remote_addr
            assert first == nat.mapping.getsockname()
            await _echo(client, host, 20)
            new = nat.rebind()
            # the client keeps sending; its next consent check (aioice: every ~5 s) comes from the
            # new mapping, we check consent there, and its DTLS then moves the session
            await _echo(client, host, 50)
            stats = listener.stats()
            assert pair.host._managed.remote_addr == new
            assert stats.get("consent_granted", 0) >= 1 and stats.get("session_moved", 0) == 1, stats
            await _echo(client, host, 50)
        finally:
            await pair.close()
            nat.close()
    await assert_no_leaked_tasks()
