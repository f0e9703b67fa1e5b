"""A DTLS man in the middle on the client's router, for test_hostile_udp.py.

``python dtls_mitm.py HOST_NET_PREFIX IFACE_TO_HOST IFACE_TO_CLIENT OUT.json``

The test drops DTLS between host and client on this router (nft, forward chain), both
ways, so neither real peer can disturb the impostor's handshake. This process watches
the packets arrive (a packet socket sees them before the forward chain drops them):
for the host's first DTLS packet it starts its own DTLS client with its own
certificate, sending from the host's address and port (spoofed) to the client, and
feeds it the client's answers. The client must see a certificate that does not match
the fingerprint the host signalled inside the end-to-end session, and refuse the path.
"""

from __future__ import annotations

import asyncio
import json
import sys

from scapy.all import IP, UDP, AsyncSniffer, Raw, conf
from scapy.supersocket import L3RawSocket


class SpoofPipe:
    """The "ICE transport" aiortc's DTLS needs: role, _recv, _send."""

    role = "controlled"

    def __init__(self, loop, sock, src, dst) -> None:
        self.loop, self.sock, self.src, self.dst = loop, sock, src, dst
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sent = self.received = 0

    async def _recv(self) -> bytes:
        data = await self.queue.get()
        self.received += 1
        return data

    async def _send(self, data: bytes) -> None:
        self.sock.send(IP(src=self.src[0], dst=self.dst[0]) / UDP(sport=self.src[1], dport=self.dst[1]) / Raw(data))
        self.sent += 1


async def main() -> int:
    prefix, to_host, to_client, out = sys.argv[1:5]
    from aiortc import RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport

    from shortpath.transport.udp._aiortc_compat import set_dtls_role

    loop = asyncio.get_running_loop()
    flows: asyncio.Queue = asyncio.Queue()
    known: set = set()
    current: list[SpoofPipe] = []
    seen = {"host_dtls": 0, "client_dtls": 0}

    def on_packet(p) -> None:
        if not (p.haslayer(IP) and p.haslayer(UDP)):
            return
        data = bytes(p[UDP].payload)
        if not data or not 19 < data[0] < 64:
            return
        src, dst = (p[IP].src, p[UDP].sport), (p[IP].dst, p[UDP].dport)
        if src[0].startswith(prefix):                  # the host's DTLS (dropped after us)
            seen["host_dtls"] += 1
            if (src, dst) not in known:                # a new upgrade attempt
                known.add((src, dst))
                loop.call_soon_threadsafe(flows.put_nowait, (src, dst))
        elif dst[0].startswith(prefix) and current and (dst, src) == (current[0].src, current[0].dst):
            seen["client_dtls"] += 1                   # the client answering the impostor
            loop.call_soon_threadsafe(current[0].queue.put_nowait, data)

    sniffer = AsyncSniffer(iface=[to_host, to_client], prn=on_packet, store=False)
    sniffer.start()
    print("sniffing", flush=True)
    conf.L3socket = L3RawSocket
    sock = conf.L3socket()
    cert = RTCCertificate.generateCertificate()
    # the impostor does not care who the client is: it accepts no fingerprint at all
    fake_fp = RTCDtlsFingerprint(algorithm="sha-256", value=":".join(["00"] * 32))
    attempts = []
    while len(attempts) < 3:                           # one handshake per upgrade attempt
        try:
            host_addr, client_addr = await asyncio.wait_for(flows.get(), 15 if attempts else 60)
        except asyncio.TimeoutError:
            break
        pipe = SpoofPipe(loop, sock, host_addr, client_addr)
        current[:] = [pipe]
        dtls = RTCDtlsTransport(pipe, [cert])
        set_dtls_role(dtls, "client")   # aiortc private name: fenced in _aiortc_compat
        try:
            await asyncio.wait_for(dtls.start(RTCDtlsParameters(fingerprints=[fake_fp])), 10)
            err = None
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {exc}"
        attempts.append({"host": list(host_addr), "client": list(client_addr), "dtls_state": dtls.state,
                         "error": err, "spoofed_sent": pipe.sent, "client_replies": pipe.received})
        await dtls.stop()
    sniffer.stop()
    sock.close()
    result = {"attempts": attempts, **seen,
              "spoofed_sent": sum(a["spoofed_sent"] for a in attempts),
              "client_replies": sum(a["client_replies"] for a in attempts)}
    with open(out, "w") as f:
        json.dump(result, f)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
