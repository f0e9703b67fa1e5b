"""The lab: build a topology of network namespaces, run things in it, tear it all down.

    from netns_lab import Lab

    with Lab(client_nat="symmetric", host_nat="port-restricted", private_link=True) as lab:
        lab.client.run(["ip", "addr"])                 # a command inside the client namespace
        gw = lab.addr("gateway")                        # 198.18.0.10
        p = lab.spawn("core", ["python3", "-m", "http.server"], ready=r"Serving")
        lab.firewall("client", "udp-blocked")           # named presets, replace the site's set
        lab.impair("client-wan", "both", delay_ms=20, loss=0.01)
        turn = lab.coturn()                             # coturn on 198.18.0.20, ready
        report = lab.probe_nat("client")                # RFC 5780-style classification

See ``netns_lab.plan`` for the address plan and link names, ``netns_lab.nat`` for NAT types,
``netns_lab.firewall`` for presets and ``netns_lab.impair`` for impairment parameters.

Everything the lab creates is recorded in a state file first (``netns_lab.state``), so
``python -m netns_lab cleanup --stale`` can remove what a crashed run left.  ``Lab`` removes
everything on ``__exit__``, on SIGINT/SIGTERM (handlers installed while a lab is up) and at
interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from . import firewall as fw
from . import nat as natmod
from . import plan
from .impair import Impairment
from .netns import LabError, Node, Proc, popen_in_ns, run
from .probe import DEFAULT_PORTS, NatReport
from .state import ProcRecord, RunState, kill_pid, list_runs, proc_start_time, teardown

# Sysctls every namespace gets, set explicitly rather than inherited from whatever the machine
# has.  Conntrack timeouts only matter on NAT routers but are set everywhere for uniformity.
BASE_SYSCTLS = {
    "net.ipv4.conf.all.rp_filter": 0,      # the private link makes some paths asymmetric
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv6.conf.all.disable_ipv6": 1,   # the lab is IPv4 only; no DAD or RA noise
    "net.ipv6.conf.default.disable_ipv6": 1,
}

#: Which TCP congestion controls a non-initial namespace may pick: one list for the whole
#: machine (only the initial namespace's copy is writable). See ``Lab.set_tcp_congestion``.
TCP_ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
TCP_AVAILABLE_CC = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
_CC_NAMES = {"reno", "cubic", "bbr", "bbr2", "bbr3", "dctcp", "vegas", "westwood", "htcp", "bic",
             "highspeed", "hybla", "illinois", "scalable", "lp", "veno", "yeah", "nv", "cdg"}


def parse_ss_tcp(text: str, known: "set[str] | None" = None) -> list[dict]:
    """``ss -tinH`` output -> [{"local": "a:p", "peer": "a:p", "cc": name or None}]. Pure.

    ss prints each socket as an address line and an indented info line whose tokens include
    the congestion control's name (``cubic``, ``bbr``, ...; sometimes after ``ts sack``)."""
    names = set(known or ()) | _CC_NAMES
    out: list[dict] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            addrs = [t for t in line.split() if ":" in t and not t.startswith("users:")]
            if len(addrs) >= 2:
                out.append({"local": addrs[-2], "peer": addrs[-1], "cc": None})
        elif out and out[-1]["cc"] is None:
            out[-1]["cc"] = next((t for t in line.split() if t in names), None)
    return out


_active: "set[Lab]" = set()
_active_lock = threading.Lock()
_prev_handlers: dict[int, object] = {}


def _on_signal(signum, frame):
    for lab in list(_active):
        try:
            lab.down()
        except Exception as e:  # noqa: BLE001 -- report and keep cleaning the others
            print(f"netns_lab: cleanup after signal {signum} failed: {e}", file=sys.stderr)
    prev = _prev_handlers.get(signum, signal.SIG_DFL)
    _restore_handlers()
    if callable(prev):
        prev(signum, frame)
    elif prev != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    if _prev_handlers or threading.current_thread() is not threading.main_thread():
        return
    for s in (signal.SIGINT, signal.SIGTERM):
        _prev_handlers[s] = signal.getsignal(s)
        signal.signal(s, _on_signal)


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for s, h in list(_prev_handlers.items()):
        signal.signal(s, h)  # type: ignore[arg-type]
    _prev_handlers.clear()


@atexit.register
def _down_all_at_exit() -> None:
    for lab in list(_active):
        if not lab.detached:
            lab.down()


class Lab:
    """One topology.  See the module docstring; every argument is keyword-friendly.

    client_nat / host_nat: a NAT type (``netns_lab.nat.NAT_TYPES``), or for the client
        ``"double"`` (home router + carrier-grade NAT, both port-restricted) or a tuple
        ``(home_router_type, cgn_type)``.
    private_link: add the managed network between the client router and the host router.
    conntrack_udp_timeout / conntrack_udp_stream_timeout: seconds, set in every namespace.
    detached: leave the topology up when this process exits (used by ``python -m netns_lab up``).
    """

    def __init__(self, client_nat="port-restricted", host_nat="port-restricted", *,
                 private_link: bool = False, run_id: str | None = None,
                 conntrack_udp_timeout: int = 30, conntrack_udp_stream_timeout: int = 120,
                 detached: bool = False, handle_signals: bool = True):
        if client_nat == "double":
            client_nat = ("port-restricted", "port-restricted")
        if isinstance(client_nat, (tuple, list)):
            home, cgn = client_nat
            self.client_nat, self.cgn_nat = natmod.canonical(home), natmod.canonical(cgn)
            if "open" in (self.client_nat, self.cgn_nat):
                raise ValueError("double NAT needs two NAT types (not 'open')")
        else:
            self.client_nat, self.cgn_nat = natmod.canonical(client_nat), None
        self.host_nat = natmod.canonical(host_nat)
        self.private_link = private_link
        self.run_id = run_id or secrets.token_hex(2)
        self.ct_timeouts = (conntrack_udp_timeout, conntrack_udp_stream_timeout)
        self.detached = detached
        self.handle_signals = handle_signals
        self.nodes_roles, self.links_list, self.routes = plan.build_plan(
            double_nat=self.cgn_nat is not None, private_link=private_link,
            client_open=self.client_nat == "open", host_open=self.host_nat == "open")
        self.links = {l.name: l for l in self.links_list}
        self.nodes = {r: Node(r, f"nl-{self.run_id}-{r}", self) for r in self.nodes_roles}
        self.state: RunState | None = None
        self.workdir: Path | None = None
        self.procs: list[Proc] = []
        self.timings: dict[str, float] = {}
        self._fw: dict[str, tuple[str, ...]] = {}
        self._impair: dict[tuple[str, str], dict] = {}  # (link, dir) -> {"imp", "proc", "queue", "ns", "if"}
        self._next_queue = 1
        self._probe_server: Proc | None = None
        self._lock = threading.RLock()
        self._up = False
        self._nspawn = 0
        self._cc_allowed_saved: str | None = None   # the global allowed list before we added to it

    @classmethod
    def attach(cls, run_id: str) -> "Lab":
        """The running lab ``run_id`` (started detached, e.g. by ``python -m netns_lab up``),
        to change from another process: impairments, firewall presets, more processes.

        What the lab did so far is read back from its state file (``netns_lab.state``):
        addressing, firewall presets, impairment emulators (pid, queue, rule)."""
        for st in list_runs():
            if st.run_id == run_id:
                break
        else:
            raise LabError(f"no recorded run {run_id!r} (see: python -m netns_lab list)")
        if not st.detached:
            # its owner keeps the state in memory and would overwrite what we record
            raise LabError(f"run {run_id} is not detached (owner pid {st.owner_pid}); change it "
                           "through its Lab object, or start labs for the shell with "
                           "`python -m netns_lab up`")
        cfg = st.config
        missing = [ns for ns in st.namespaces if not Path("/run/netns", ns).exists()]
        if missing or not st.namespaces:
            raise LabError(f"run {run_id} is not up (namespaces missing: {missing or 'all'})")
        client = cfg["client_nat"]
        lab = cls(tuple(client) if isinstance(client, list) else client, cfg["host_nat"],
                  private_link=cfg["private_link"], run_id=run_id, detached=True,
                  handle_signals=False)
        lab.state = st
        lab.workdir = Path(st.workdir) if st.workdir else None
        lab._up = True
        lab._fw = {k: tuple(v) for k, v in cfg.get("firewall", {}).items()}
        lab._next_queue = cfg.get("next_queue", 1)
        for key, e in cfg.get("impair", {}).items():
            link, d = key.split("/")
            lab._impair[(link, d)] = {
                "imp": Impairment(**e["params"]), "proc": None, "queue": e.get("queue"),
                "rec": ProcRecord(**e["rec"]) if e.get("rec") else None,
                "node": e.get("node"), "if": e.get("if"), "peer": e.get("peer")}
        return lab

    # ---------------------------------------------------------------- nodes and addresses
    @property
    def client(self) -> Node: return self.nodes[plan.CLIENT]
    @property
    def client_router(self) -> Node: return self.nodes[plan.CLIENT_ROUTER]
    @property
    def cgn(self) -> Node | None: return self.nodes.get(plan.CGN)
    @property
    def core(self) -> Node: return self.nodes[plan.CORE]
    @property
    def host_router(self) -> Node: return self.nodes[plan.HOST_ROUTER]
    @property
    def host(self) -> Node: return self.nodes[plan.HOST]

    def node(self, role: str | Node) -> Node:
        if isinstance(role, Node):
            return role
        try:
            return self.nodes[role]
        except KeyError:
            raise LabError(f"no node {role!r}; nodes: {sorted(self.nodes)}") from None

    def addr(self, name: str) -> str:
        """An address by name: a service ("gateway", "turn", "stun", "stun-alt"), "client",
        "host", "client-public"/"host-public" (the edge routers' WAN addresses), "private-client"
        / "private-host" (private-link ends), or "<node>:<ifname>"."""
        if name in plan.SERVICES:
            return plan.SERVICES[name]
        edge = plan.CGN if self.cgn_nat else plan.CLIENT_ROUTER
        alias = {"client": "client:lan", "host": "host:lan",
                 "client-public": f"{edge}:wan", "host-public": "hrtr:wan",
                 "private-client": "crtr:pl", "private-host": "hrtr:pl"}
        key = alias.get(name, name)
        node, _, ifname = key.partition(":")
        for l in self.links_list:
            for end in (l.a, l.b):
                if end.node == node and end.ifname == ifname:
                    return end.ip  # type: ignore[return-value]
        raise LabError(f"unknown address name {name!r}")

    def describe(self) -> dict:
        return {
            "run_id": self.run_id,
            "namespaces": {r: n.ns for r, n in self.nodes.items()},
            "client_nat": [self.client_nat, self.cgn_nat] if self.cgn_nat else self.client_nat,
            "host_nat": self.host_nat, "private_link": self.private_link,
            "links": {l.name: [f"{l.a.node}:{l.a.ifname} {l.a.addr}",
                               f"{l.b.node}:{l.b.ifname} {l.b.addr}"] for l in self.links_list},
            "services": dict(plan.SERVICES),
        }

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Lab":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> "Lab":
        from .prereq import require
        require("lab")      # one line per missing program, naming its Debian package
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"netns_lab-{self.run_id}-"))
        self.state = RunState(self.run_id, os.getpid(), proc_start_time(os.getpid()),
                              detached=self.detached, workdir=str(self.workdir),
                              config=self.describe())
        self.state.save()  # before creating anything: a crash from here on is recoverable
        with _active_lock:
            _active.add(self)
        if self.handle_signals and not self.detached:
            _install_handlers()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        self._up = True
        self.timings["up_s"] = time.monotonic() - t0
        return self

    def _build(self) -> None:
        assert self.state is not None
        for node in self.nodes.values():
            if Path("/run/netns", node.ns).exists():
                raise LabError(f"namespace {node.ns} already exists (run id clash?)")
            self.state.namespaces.append(node.ns)
            self.state.save()
            run(["ip", "netns", "add", node.ns])
        udp_t, udp_st = self.ct_timeouts
        for role, node in self.nodes.items():
            s = dict(BASE_SYSCTLS)
            s["net.ipv4.ip_forward"] = 1 if role in (*plan.ROUTERS, plan.CORE) else 0
            s["net.netfilter.nf_conntrack_udp_timeout"] = udp_t
            s["net.netfilter.nf_conntrack_udp_timeout_stream"] = udp_st
            node.sysctl(s)
        for l in self.links_list:
            # Created from inside namespace a, the peer directly in namespace b: the root
            # namespace never sees these devices, so short fixed names cannot collide.
            self.nodes[l.a.node].ip("link", "add", "name", l.a.ifname, "type", "veth", "peer",
                                    "name", l.b.ifname, "netns", self.nodes[l.b.node].ns)
        batches: dict[str, list[str]] = {r: ["link set dev lo up"] for r in self.nodes}
        for l in self.links_list:
            for end in (l.a, l.b):
                if end.addr:
                    batches[end.node].append(f"addr add {end.addr} dev {end.ifname}")
                batches[end.node].append(f"link set dev {end.ifname} up")
        for svc_ip in plan.SERVICES.values():
            batches[plan.CORE].append(f"addr add {svc_ip}/32 dev lo")
        for r in self.routes:
            batches[r.node].append(f"route add {r.dest} via {r.via}")
        for role, lines in batches.items():
            self.nodes[role].ip_batch(lines)
        self._apply_router(plan.CLIENT_ROUTER, self.client_nat, flush=False)
        if self.cgn_nat:
            self._apply_router(plan.CGN, self.cgn_nat, flush=False)
        self._apply_router(plan.HOST_ROUTER, self.host_nat, flush=False)

    def _apply_router(self, role: str, nat_type: str, flush: bool = True) -> None:
        private = "pl" if (self.private_link and role != plan.CGN) else None
        script = natmod.router_ruleset(nat_type, private=private,
                                       map_timeout_s=self.ct_timeouts[1])
        node = self.nodes[role]
        node.nft(script)
        if flush:
            node.python("-m", "netns_lab.nfnl", "flush-conntrack")

    def set_nat(self, side: str, nat_type: str) -> None:
        """Switch a router's NAT type live ("client", "cgn" or "host"); flushes its conntrack.

        Switching to/from "open" is not supported live (it changes the LAN addressing)."""
        role = {"client": plan.CLIENT_ROUTER, "cgn": plan.CGN, "host": plan.HOST_ROUTER}[side]
        t = natmod.canonical(nat_type)
        current = {"client": self.client_nat, "cgn": self.cgn_nat, "host": self.host_nat}[side]
        if current is None:
            raise LabError("this lab has no CGN (use client_nat='double')")
        if "open" in (t, current) and t != current:
            raise LabError("cannot switch to/from 'open' on a running lab; build a new one")
        self._apply_router(role, t, flush=True)
        if side == "client":
            self.client_nat = t
        elif side == "cgn":
            self.cgn_nat = t
        else:
            self.host_nat = t

    def down(self) -> None:
        """Stop everything and delete every namespace of this run.  Idempotent."""
        with self._lock:
            if self.state is None:
                return
            t0 = time.monotonic()
            dead = self.helper_failures()
            if dead:    # exited before the lab went down: say so (pytest shows it on failure)
                print(f"netns_lab {self.run_id}: helpers that exited before down():\n{dead}",
                      file=sys.stderr)
            for key in list(self._impair):
                ent = self._impair.pop(key)
                if ent.get("proc"):
                    ent["proc"].stop(timeout=1.0)
            for p in reversed(self.procs):
                p.stop(timeout=2.0)
            problems = teardown(self.state)
            try:
                self._restore_allowed_cc()
            except OSError as e:
                problems = [*problems, f"restoring {TCP_ALLOWED_CC}: {e}"]
            self.state = None
            self.procs.clear()
            self._probe_server = None
            self._up = False
            with _active_lock:
                _active.discard(self)
                if not _active:
                    _restore_handlers()
            self.timings["down_s"] = time.monotonic() - t0
            if problems:
                raise LabError("cleanup incomplete: " + "; ".join(problems))

    # ---------------------------------------------------------------- processes
    def run(self, node: str | Node, argv: Sequence[str], **kw):
        """Run a command to completion inside a node (``subprocess.CompletedProcess``)."""
        return self.node(node).run(argv, **kw)

    def spawn(self, node: str | Node, argv: Sequence[str], *, stdin: bool = False,
              env: dict | None = None, ready: str | None = None, ready_timeout: float = 10.0,
              cwd: str | None = None) -> Proc:
        """Start a long-running process inside a node; its pid is recorded for cleanup.

        stdout+stderr go to a log file in the run's work dir (``proc.log_path``) and can be
        awaited line by line (``proc.wait_for_line``).  ``ready``: a regex to wait for first.
        """
        n = self.node(node)
        if self.state is None:
            raise LabError("lab is not up")
        assert self.workdir is not None
        name = Path(argv[0]).name + (f"-{argv[2]}" if len(argv) > 2 and argv[1] == "-m" else "")
        if self.detached and not stdin:
            # A detached lab outlives this process: no pipe that would break when it exits.
            self._nspawn += 1
            log = self.workdir / f"{n.role}-{name}-{os.getpid()}-{self._nspawn}.log"
            popen = popen_in_ns(n.ns, argv, env=env, cwd=cwd, log_file=log)
        else:
            popen = popen_in_ns(n.ns, argv, stdin=stdin, env=env, cwd=cwd)
            log = self.workdir / f"{n.role}-{name}-{popen.pid}.log"
        p = Proc(n.role, n.ns, argv, popen, log)
        with self._lock:
            self.procs.append(p)
            self.state.procs.append(p.record())
            self.state.save()
        if ready:
            try:
                p.wait_for_line(ready, ready_timeout)
            except LabError:
                self.stop(p)
                raise
        return p

    def helper_failures(self, n: int = 15) -> str:
        """Every helper of this lab that has exited on its own, with its exit status and last
        output lines (kept in memory: still there once the run's directory is deleted); "" if
        none. For a failing test's message: a dead helper is often the real cause."""
        with self._lock:
            dead = [p for p in self.procs if not p.alive()]
        return "\n".join(p.describe_exit(n=n) for p in dead)

    def stop(self, proc: Proc, timeout: float = 3.0) -> int | None:
        rc = proc.stop(timeout)
        with self._lock:
            if proc in self.procs:
                self.procs.remove(proc)
            if self.state is not None:
                self.state.procs = [r for r in self.state.procs if r.pid != proc.pid]
                self.state.save()
        return rc

    def python(self, node: str | Node, *args: str, **kw):
        return self.node(node).python(*args, **kw)

    # ---------------------------------------------------------------- TCP congestion control
    @contextlib.contextmanager
    def set_tcp_congestion(self, nodes: Sequence[str], algo: str):
        """While the block runs, TCP sockets created in ``nodes`` (and connections they accept)
        use congestion control ``algo`` by default; sockets keep what they got afterwards.

        A namespace other than the initial one may only pick a control on the machine-wide
        allowed list, so ``algo`` is appended there first if missing. On exit, also on error,
        every node's previous default is restored, then the allowed list (``down()`` restores
        the list too, if a run ends inside the block). Raises LabError, saying why, when the
        kernel has no such control or refuses it."""
        avail = TCP_AVAILABLE_CC.read_text().split()
        if algo not in avail:
            raise LabError(f"TCP congestion control {algo!r} is not available in this kernel "
                           f"({TCP_AVAILABLE_CC}: {' '.join(avail)}; it may need `modprobe tcp_{algo}`)")
        saved: list[tuple[Node, str]] = []
        try:
            allowed = TCP_ALLOWED_CC.read_text().split()
            if algo not in allowed:
                if self._cc_allowed_saved is None:
                    self._cc_allowed_saved = " ".join(allowed)
                try:
                    TCP_ALLOWED_CC.write_text(" ".join([*allowed, algo]) + "\n")
                except OSError as e:
                    raise LabError(f"cannot add {algo} to {TCP_ALLOWED_CC}: {e}") from e
            for role in nodes:
                n = self.node(role)
                prev = n.read_sysctl("net.ipv4.tcp_congestion_control")
                saved.append((n, prev))
                r = n.run(["sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={algo}"], check=False)
                now = n.read_sysctl("net.ipv4.tcp_congestion_control")
                if r.returncode != 0 or now != algo:
                    raise LabError(f"namespace {n.ns}: the kernel refused congestion control {algo} "
                                   f"(default stays {now}): {(r.stderr or '').strip()}")
            yield
        finally:
            errors = []
            for n, prev in reversed(saved):
                r = n.run(["sysctl", "-q", "-w", f"net.ipv4.tcp_congestion_control={prev}"], check=False)
                if r.returncode != 0:
                    errors.append(f"{n.ns}: {(r.stderr or '').strip()}")
            try:
                self._restore_allowed_cc()
            except OSError as e:
                errors.append(f"{TCP_ALLOWED_CC}: {e}")
            if errors:
                raise LabError("restoring TCP congestion control failed: " + "; ".join(errors))

    def _restore_allowed_cc(self) -> None:
        if self._cc_allowed_saved is not None:
            TCP_ALLOWED_CC.write_text(self._cc_allowed_saved + "\n")
            self._cc_allowed_saved = None

    def tcp_connections(self, node: str | Node) -> list[dict]:
        """The node's established TCP connections: [{"local", "peer", "cc"}] (``ss -tin``)."""
        r = self.node(node).run(["ss", "-tinH", "state", "established"])
        return parse_ss_tcp(r.stdout, set(TCP_AVAILABLE_CC.read_text().split()))

    # ---------------------------------------------------------------- firewalls
    def firewall(self, site: str, *presets: str) -> None:
        """Replace the presets active at ``site`` ("client" or "host"); none = open again.

        Site presets go on the site's router; "host-managed-inbound" goes on the host node."""
        if site not in ("client", "host"):
            raise LabError("site must be 'client' or 'host'")
        site_p = [p for p in presets if p in fw.SITE_PRESETS]
        host_p = [p for p in presets if p in fw.HOST_PRESETS]
        bad = set(presets) - set(site_p) - set(host_p)
        if bad:
            raise LabError(f"unknown firewall preset(s) {sorted(bad)}; known: {fw.PRESETS}")
        if host_p and site != "host":
            raise LabError("host-managed-inbound applies to the host site only")
        router = self.client_router if site == "client" else self.host_router
        router.nft(fw.site_ruleset(site_p))
        if site == "host":
            self.host.nft(fw.host_ruleset(host_p))
        self._fw[site] = tuple(presets)
        if self.state is not None:
            self.state.config["firewall"] = {k: list(v) for k, v in self._fw.items()}
            self.state.save()

    def firewall_counters(self, site: str) -> dict[str, int]:
        """Packets dropped so far per preset at ``site``."""
        nodes = [self.client_router] if site == "client" else [self.host_router, self.host]
        out: dict[str, int] = {}
        for n in nodes:
            r = n.run(["nft", "-j", "list", "table", "inet", "labfw"], check=False)
            if r.returncode == 0:
                for k, v in fw.parse_counters(json.loads(r.stdout)).items():
                    out[k] = out.get(k, 0) + v
        return out

    # ---------------------------------------------------------------- impairment
    def _link_dirs(self, link: str, direction: str):
        if link not in self.links:
            raise LabError(f"no link {link!r}; links: {sorted(self.links)}")
        l = self.links[link]
        dirs = {"up": (l.a, l.b), "down": (l.b, l.a)}
        if direction == "both":
            return [("up", *dirs["up"]), ("down", *dirs["down"])]
        if direction not in dirs:
            raise LabError("direction must be 'up', 'down' or 'both'")
        return [(direction, *dirs[direction])]

    def impair(self, link: str, direction: str = "both", imp: Impairment | None = None,
               *, peer: str | None = None, **params) -> None:
        """Set (replace) the impairment of one link direction (or both).

        Parameters are those of ``netns_lab.impair.Impairment`` (delay_ms, jitter_ms, loss,
        ge_p/ge_r or ``**gilbert_elliott(...)``, reorder, rate_kbit, ...).  No parameters =
        clear.  Delay/loss/reorder run in an NFQUEUE emulator process in the receiving node;
        rate limits are a tbf qdisc on the sending interface.

        ``peer="198.18.0.11"``: impair only this link's packets to or from that address (its
        own emulator and queue, rules ``-d``/``-s`` peer inserted ahead of a whole-link rule),
        e.g. one delay per gateway address on the client's WAN link.  Each peer is set and
        cleared on its own (``impair(link, d, peer=P)`` with no parameters clears it); rate
        limits are per interface and cannot be per peer.
        """
        imp = imp or Impairment(**params)
        if peer is not None:
            try:
                ipaddress.IPv4Address(peer)
            except ValueError:
                raise LabError(f"peer must be one IPv4 address, got {peer!r}") from None
            if imp.rate_kbit:
                raise LabError("rate_kbit is per interface (tbf): it cannot be limited to one peer")
        for d, snd, rcv in self._link_dirs(link, direction):
            self._impair_one(link, d, snd, rcv, imp, peer)

    def clear_impairments(self) -> None:
        for link, d in list(self._impair):
            d, _, peer = d.partition("@")
            self.impair(link, d, peer=peer or None)

    def _impair_one(self, link, d, snd, rcv, imp: Impairment, peer: str | None = None) -> None:
        key = (link, f"{d}@{peer}" if peer else d)
        if peer:    # the link's rate limit (tbf on the sender) belongs to the whole-link entry
            self._impair_peer(key, rcv, imp, peer)
            return
        sender = self.nodes[snd.node]
        if imp.rate_kbit:
            rate_bps = imp.rate_kbit * 1000
            burst = max(3200, int(rate_bps / 8 * 0.004))  # >= 2 MTU, or 4 ms worth of bytes
            sender.run(["tc", "qdisc", "replace", "dev", snd.ifname, "root", "tbf",
                        "rate", f"{imp.rate_kbit}kbit", "burst", str(burst),
                        "latency", f"{imp.rate_queue_ms}ms"])
        else:
            sender.run(["tc", "qdisc", "del", "dev", snd.ifname, "root"], check=False)
        ent = self._impair.get(key)
        receiver = self.nodes[rcv.node]
        if imp.needs_queue():
            self._run_emulator(key, rcv, imp, peer=None)
        elif ent:
            self._drop_emulator(ent, receiver)
            del self._impair[key]
        if imp.rate_kbit and not imp.needs_queue():
            self._impair[key] = {"imp": imp, "proc": None}
        self._save_impairments()

    @staticmethod
    def _peer_matches(peer: str | None) -> list[list[str]]:
        """iptables match arguments of one emulator's rules: the whole link, or to/from a peer."""
        return [["-d", f"{peer}/32"], ["-s", f"{peer}/32"]] if peer else [[]]

    def _impair_peer(self, key, rcv, imp: Impairment, peer: str) -> None:
        """One direction of a link, only packets to or from ``peer``: its own emulator."""
        ent = self._impair.get(key)
        receiver = self.nodes[rcv.node]
        if not imp.needs_queue():
            if ent:
                self._drop_emulator(ent, receiver)
                del self._impair[key]
            self._save_impairments()
            return
        self._run_emulator(key, rcv, imp, peer=peer)
        self._save_impairments()

    def _run_emulator(self, key, rcv, imp: Impairment, peer: str | None) -> None:
        """Give one link direction (or, with ``peer``, the packets to/from one address on it) an
        emulator with ``imp``: reconfigure the running one over its stdin, else start a new one
        with its own NFQUEUE rule(s)."""
        ent = self._impair.get(key)
        receiver = self.nodes[rcv.node]
        cfg = json.dumps(imp.to_dict())
        proc = ent.get("proc") if ent else None
        if proc is not None and proc.alive() and proc.popen.stdin is not None:
            mark = proc.mark()
            proc.send_line(cfg)
            proc.wait_for_line(r"^CONFIGURED$", 5.0, since=mark)
            ent["imp"] = imp  # type: ignore[index]
            return
        if ent:
            self._drop_emulator(ent, receiver)
        q = self._next_queue
        self._next_queue += 1
        argv = [sys.executable, "-m", "netns_lab.emulator", "--queue", str(q), "--config", cfg]
        if self.detached:       # nobody will hold its stdin: reconfigure = replace
            argv.append("--no-stdin")
        proc = self.spawn(receiver, argv, stdin=not self.detached, ready=r"^READY")
        # A whole-link rule is appended; a peer's rules are inserted at the top, so a packet
        # to/from the peer takes its queue, not the link's (a queue verdict ends the chain).
        where = "-I" if peer else "-A"
        for m in self._peer_matches(peer):
            receiver.run(["iptables", "-w", "-t", "raw", where, "PREROUTING", "-i", rcv.ifname,
                          *m, "-j", "NFQUEUE", "--queue-num", str(q), "--queue-bypass"])
        self._impair[key] = {"imp": imp, "proc": proc, "rec": proc.record(), "queue": q,
                             "node": rcv.node, "if": rcv.ifname}
        if peer:
            self._impair[key]["peer"] = peer

    def _drop_emulator(self, ent: dict, receiver: Node) -> None:
        """Remove one direction's NFQUEUE rule(s) and stop its emulator (ours, or recorded)."""
        if ent.get("queue") is None:
            return
        for m in self._peer_matches(ent.get("peer")):
            receiver.run(["iptables", "-w", "-t", "raw", "-D", "PREROUTING", "-i",
                          ent["if"], *m, "-j", "NFQUEUE", "--queue-num", str(ent["queue"]),
                          "--queue-bypass"], check=False)
        if ent.get("proc") is not None:
            self.stop(ent["proc"])
        elif ent.get("rec") is not None:        # started by another process (attached lab)
            rec = ent["rec"]
            kill_pid(rec.pid, rec.start)
            with self._lock:
                if self.state is not None:
                    self.state.procs = [r for r in self.state.procs if r.pid != rec.pid]
                    self.state.save()

    def _save_impairments(self) -> None:
        """Record the impairments in the state file (what ``Lab.attach`` reads back)."""
        if self.state is None:
            return
        from dataclasses import asdict
        self.state.config["impair"] = {
            f"{link}/{d}": {"params": e["imp"].to_dict(), "queue": e.get("queue"),
                            "node": e.get("node"), "if": e.get("if"), "peer": e.get("peer"),
                            "rec": asdict(e["rec"]) if e.get("rec") else None}
            for (link, d), e in self._impair.items()}
        self.state.config["next_queue"] = self._next_queue
        self.state.save()

    def emulator_stats(self, link: str, direction: str, peer: str | None = None) -> dict:
        ent = self._impair.get((link, f"{direction}@{peer}" if peer else direction))
        if not ent or not ent.get("proc"):
            raise LabError(f"no emulator on {link} {direction}" + (f" for {peer}" if peer else ""))
        p: Proc = ent["proc"]
        mark = p.mark()
        p.send_line("stats")
        line = p.wait_for_line(lambda s: s.startswith("{") and '"accepted"' in s, 5.0,
                               since=mark)
        return json.loads(line)

    def reach(self, node: str, to: str, port: int, proto: str = "udp",
              timeout: float = 0.5) -> bool:
        """One request/answer from ``node`` to an echo server (``netns_lab.echo``) at
        ``to:port``; True if answered within ``timeout``."""
        r = self.python(node, "-m", "netns_lab.echo", "client", "--to", to, "--port", str(port),
                        "--proto", proto, "--timeout", str(timeout), check=False)
        return r.returncode == 0

    def echo_server(self, node: str, bind: str, udp=(), tcp=()) -> Proc:
        """Start a UDP/TCP echo server (``netns_lab.echo``) in ``node``; returns once ready."""
        argv = [sys.executable, "-m", "netns_lab.echo", "server", "--bind", bind]
        for p in udp:
            argv += ["--udp", str(p)]
        for p in tcp:
            argv += ["--tcp", str(p)]
        return self.spawn(node, argv, ready=r"^READY")

    # ---------------------------------------------------------------- measurement
    def measure_udp(self, src: str, dst: str, dst_addr: str | None = None, *,
                    rate: float = 1000, count: int = 1000, size: int = 64, port: int = 9000,
                    linger: float = 0.3) -> dict:
        """Send ``count`` UDP datagrams at ``rate``/s from ``src`` to ``dst`` and summarise
        one-way delay, loss, reordering and loss bursts (``netns_lab.udpmeter``)."""
        from .udpmeter import summarize
        dst_addr = dst_addr or {"core": plan.SERVICES["stun"]}.get(dst) or self.addr(dst)
        assert self.workdir is not None
        out = self.workdir / f"udpmeter-{port}-{time.time_ns()}.json"
        rcv = self.spawn(dst, [sys.executable, "-m", "netns_lab.udpmeter", "recv", "--bind",
                               dst_addr, "--port", str(port), "--out", str(out),
                               "--linger", str(linger)], ready=r"^READY")
        try:
            snd = self.python(src, "-m", "netns_lab.udpmeter", "send", "--to", dst_addr,
                              "--port", str(port), "--rate", str(rate), "--count", str(count),
                              "--size", str(size), timeout=count / rate + 60)
            rcv.wait_for_line(r"^DONE", timeout=30)
        finally:
            self.stop(rcv)
        sender = json.loads(snd.stdout.strip().splitlines()[-1])
        res = summarize(json.loads(out.read_text()), sender["sent"])
        out.unlink()
        res["sender"] = sender
        return res

    # ---------------------------------------------------------------- services
    def probe_server(self) -> Proc:
        """The RFC 5780-style probe server on stun/stun-alt (started once, on demand)."""
        if self._probe_server is None or not self._probe_server.alive():
            self._probe_server = self.spawn(
                "core", [sys.executable, "-m", "netns_lab.probe", "server",
                         "--addr", plan.SERVICES["stun"], "--alt", plan.SERVICES["stun-alt"]],
                ready=r"^READY")
        return self._probe_server

    def probe_nat(self, side: str = "client") -> NatReport:
        """Classify the NAT in front of the client (or host) node from the outside."""
        self.probe_server()
        node = self.client if side == "client" else self.host
        r = node.python("-m", "netns_lab.probe", "client", "--addr", plan.SERVICES["stun"],
                        "--alt", plan.SERVICES["stun-alt"], "--port", str(DEFAULT_PORTS[0]),
                        "--alt-port", str(DEFAULT_PORTS[1]), check=False)
        if r.returncode != 0:
            raise LabError(f"probe from {side} failed: {r.stdout}{r.stderr}")
        return NatReport.from_json(r.stdout.strip().splitlines()[-1])

    def expected_nat(self, side: str = "client") -> tuple[str, str]:
        if side == "client" and self.cgn_nat:
            return natmod.expected_double(self.client_nat, self.cgn_nat)
        return natmod.EXPECTED[self.client_nat if side == "client" else self.host_nat]

    def coturn(self, **kw):
        """Start coturn in the core on the "turn" address (see ``netns_lab.coturn``)."""
        from .coturn import start_in_lab
        return start_in_lab(self, **kw)
