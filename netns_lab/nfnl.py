"""A minimal nfnetlink client in the standard library: NFQUEUE and conntrack flush.

Only what the lab needs, so that no C binding (libnetfilter_queue) or conntrack tool has to be
installed.  Everything works on the network namespace of the calling process, so run it inside a
lab namespace (``ip netns exec``).

Wire format (all netlink headers in host byte order, nfnetlink attributes big-endian)::

    nlmsghdr   u32 len | u16 type | u16 flags | u32 seq | u32 portid
    nfgenmsg   u8 family | u8 version (0) | be16 res_id (queue number)
    nlattr*    u16 len | u16 type | payload, padded to 4 bytes

    type = subsystem << 8 | message
      subsystem 3 (queue):     0 PACKET (kernel -> us), 1 VERDICT, 2 CONFIG
      subsystem 1 (conntrack): 2 DELETE (no attributes = flush the table)

Queue CONFIG attributes: 1 CMD {u8 cmd, u8 pad, be16 pf} (cmd 1 = bind), 2 PARAMS
{be32 copy_range, u8 copy_mode} (mode 1 = metadata only), 3 QUEUE_MAXLEN be32.
PACKET attributes we read: 1 PACKET_HDR {be32 id, be16 hw_protocol, u8 hook},
4 TIMESTAMP {be64 sec, be64 usec}.  VERDICT attribute: 2 VERDICT_HDR {be32 verdict, be32 id}
with verdict 0 = drop, 1 = accept.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_QUEUE = 3
IPCTNL_MSG_CT_DELETE = 2
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2

NFQA_PACKET_HDR = 1
NFQA_TIMESTAMP = 4
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1

NF_DROP = 0
NF_ACCEPT = 1

_NLMSGHDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_ATTR = struct.Struct("=HH")


class NetlinkError(OSError):
    pass


def _attr(atype: int, payload: bytes) -> bytes:
    ln = _ATTR.size + len(payload)
    return _ATTR.pack(ln, atype) + payload + b"\0" * ((4 - ln % 4) % 4)


def _msg(mtype: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    payload = _NFGEN.pack(family, 0, res_id) + body
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), mtype, flags, seq, 0) + payload


def _attrs(buf: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        ln, at = _ATTR.unpack_from(buf, off)
        if ln < 4:
            break
        out[at & 0x3FFF] = buf[off + 4: off + ln]
        off += (ln + 3) & ~3
    return out


def _open() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    s.bind((0, 0))
    return s


def _request(sock: socket.socket, msg: bytes, seq: int) -> None:
    """Send one request with NLM_F_ACK and wait for its ack; raise NetlinkError on failure."""
    sock.send(msg)
    while True:
        data = sock.recv(65536)
        off = 0
        while off + _NLMSGHDR.size <= len(data):
            ln, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
            if mtype == NLMSG_ERROR and mseq == seq:
                (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                if err:
                    raise NetlinkError(-err, os.strerror(-err))
                return
            off += (ln + 3) & ~3


def flush_conntrack(family: int = socket.AF_INET) -> None:
    """Delete every conntrack entry of ``family`` in the calling process's namespace."""
    with _open() as s:
        mtype = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        _request(s, _msg(mtype, NLM_F_REQUEST | NLM_F_ACK, 1, family, 0, b""), 1)


class NfQueue:
    """Bind one NFQUEUE number in metadata-only copy mode and hand out packet ids.

    ``read()`` returns ``[(packet_id, kernel_rx_realtime_or_None), ...]`` for everything that is
    waiting; ``verdicts([(id, NF_ACCEPT|NF_DROP), ...])`` sends them in a single datagram.
    """

    def __init__(self, num: int, maxlen: int = 16384, rcvbuf: int = 8 << 20):
        self.num = num
        self.sock = _open()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        except OSError:
            pass
        cfg = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        self._vtype = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        _request(self.sock, _msg(cfg, NLM_F_REQUEST | NLM_F_ACK, 1, socket.AF_UNSPEC, num,
                                 _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))), 1)
        body = (_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))
        _request(self.sock, _msg(cfg, NLM_F_REQUEST | NLM_F_ACK, 2, socket.AF_UNSPEC, num, body), 2)
        self.sock.setblocking(False)
        self._vhdr = _ATTR.pack(12, 2)  # NFQA_VERDICT_HDR, len 4 + 8

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[tuple[int, float | None]]:
        out = []
        while True:
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                return out
            except OSError as e:  # ENOBUFS if NO_ENOBUFS is unavailable: keep going
                if e.errno == errno.ENOBUFS:
                    continue
                raise
            off = 0
            n = len(data)
            while off + _NLMSGHDR.size <= n:
                ln, mtype, _f, _s, _p = _NLMSGHDR.unpack_from(data, off)
                if ln < _NLMSGHDR.size:
                    break
                if mtype & 0xFF == NFQNL_MSG_PACKET and mtype >> 8 == NFNL_SUBSYS_QUEUE:
                    a = _attrs(data, off + _NLMSGHDR.size + _NFGEN.size, off + ln)
                    hdr = a.get(NFQA_PACKET_HDR)
                    if hdr:
                        pid = struct.unpack_from("!I", hdr)[0]
                        ts = a.get(NFQA_TIMESTAMP)
                        t = None
                        if ts and len(ts) >= 16:
                            sec, usec = struct.unpack_from("!QQ", ts)
                            t = sec + usec * 1e-6
                        out.append((pid, t))
                off += (ln + 3) & ~3

    def verdicts(self, items) -> None:
        parts = []
        hdr_pack = _NLMSGHDR.pack
        gen = _NFGEN.pack(socket.AF_UNSPEC, 0, self.num)
        vtype = self._vtype
        vhdr = self._vhdr
        for pid, verdict in items:
            parts.append(hdr_pack(32, vtype, NLM_F_REQUEST, 0, 0) + gen + vhdr
                         + struct.pack("!II", verdict, pid))
        if not parts:
            return
        # Stay well below the default netlink socket send limits: chunks of 512 verdicts.
        for i in range(0, len(parts), 512):
            buf = b"".join(parts[i:i + 512])
            while True:
                try:
                    self.sock.send(buf)
                    break
                except BlockingIOError:
                    import select
                    select.select([], [self.sock], [], 0.01)

    def close(self) -> None:
        self.sock.close()


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m netns_lab.nfnl")
    p.add_argument("action", choices=["flush-conntrack"])
    a = p.parse_args(argv)
    if a.action == "flush-conntrack":
        flush_conntrack()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
