"""Scenarios: the real shortpath gateway, host and client processes inside a lab.

``run_scenario(client_nat=..., host_nat=..., ...)`` builds a lab, starts coturn
and the gateway in the core, a host behind the host NAT (managed Shortpath on
its LAN address, UDP 3390), runs ``shortpath connect --json`` in the client
namespace and returns what the session reported: the path it ended on, the
candidate types of the selected pair, time to relay first byte and time to UDP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import plan
from .lab import Lab

MANAGED_PORT = 3390


def _gateway_config(path: Path, state: Path, turn) -> None:
    gw, t = plan.SERVICES["gateway"], plan.SERVICES["turn"]
    path.write_text(f"""[gateway]
listen = "{gw}:443"
state_dir = "{state}"

[[pool]]
name = "desktop"
load_balancer = "breadth-first"
max_sessions = 10

[pool.shortpath]
enabled = true
managed = true
public_direct = true
turn = true
managed_port = {MANAGED_PORT}

[turn]
stun = "{t}:{turn.port}"
turn = "{t}:{turn.port}"
turn_tls = "{t}:{turn.tls_port}"
secret = "{turn.secret}"
credential_ttl = 600
""")


def _write_private(path: Path, text: str) -> None:
    """Write a secret (a token) readable by its owner only (0600), never briefly wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def start_stack(lab: Lab, *, managed: bool = True, host_app: str | None = None) -> dict:
    """coturn + gateway in the core, host h1 behind the host NAT. Returns the paths a client needs.
    ``host_app``: the host's ``--app MODULE:ATTR`` (default: the example desktop app)."""
    from shortpath.auth.tokens import TokenSigner
    from shortpath.config import DEFAULT_GATEWAY_ID

    work = Path(lab.workdir) / "shortpath"
    state = work / "gateway"
    state.mkdir(parents=True, exist_ok=True)
    turn = lab.coturn()
    cfg = work / "gateway.toml"
    _gateway_config(cfg, state, turn)
    signer = TokenSigner.load_or_create(str(state / "signing.key"))
    now = time.time()
    _write_private(work / "host.tok", signer.mint("host", "h1", DEFAULT_GATEWAY_ID, 3600, now,
                                                  pool="desktop"))
    _write_private(work / "user.tok", signer.mint("user", "alice", DEFAULT_GATEWAY_ID, 3600, now,
                                                  resources=["desktop"]))
    py = sys.executable
    lab.spawn("core", [py, "-m", "shortpath", "gateway", "--config", str(cfg), "--state", str(state)],
              ready="gateway-ready", ready_timeout=15)
    host_argv = [py, "-m", "shortpath", "host", "--gateway", f"{plan.SERVICES['gateway']}:443",
                 "--host-id", "h1", "--token-file", str(work / "host.tok"), "--ca", str(state / "gateway.crt"),
                 "--state", str(work / "h1"), "--turn-ca", str(turn.cert)]
    if managed:
        host_argv += ["--managed", f"{lab.addr('host')}:{MANAGED_PORT}"]
    if host_app:
        host_argv += ["--app", host_app]
    host = lab.spawn("host", host_argv, ready="host-registered", ready_timeout=15,
                     env={"SHORTPATH_LOG": "INFO"})     # path changes, for a failure's report
    return {"work": work, "state": state, "turn_cert": str(turn.cert), "host_proc": host}


def _shortpath_lines(text: str, limit: int = 3000) -> str:
    """The shortpath lines of a process log (aioice's per-check lines left out)."""
    return "\n".join(l for l in text.splitlines() if "aioice" not in l)[-limit:]


def client_argv(stack: dict, *extra: str, as_json: bool = True) -> list[str]:
    """``python`` arguments of a ``shortpath connect`` to the stack (``--json`` unless told)."""
    return ["-m", "shortpath", "connect", "--gateway", f"{plan.SERVICES['gateway']}:443",
            "--token-file", str(stack["work"] / "user.tok"), "--ca", str(stack["state"] / "gateway.crt"),
            *(["--json"] if as_json else []), "--turn-ca", stack["turn_cert"], *extra]


def connect_command(lab: Lab, stack: dict, *extra: str) -> list[str]:
    """The whole ``shortpath connect`` command a shell user runs from the client namespace."""
    return ["ip", "netns", "exec", lab.client.ns, sys.executable,
            *client_argv(stack, *extra, as_json=False)]


def summarize(info: dict) -> dict:
    udp = next((p for p in info["paths"] if p["kind"] != "tcp-relay"), None)
    return {"ok": True, "path": info["transport"], "setup_ms": info["setup_ms"],
            "time_to_udp_ms": None if info.get("time_to_udp") is None else round(info["time_to_udp"] * 1000, 1),
            "echo_rtt_p50_ms": info["echo_rtt_p50_ms"],
            "local_candidate": udp and udp.get("local_candidate"),
            "remote_candidate": udp and udp.get("remote_candidate"),
            "history": info["history"], "client_log": info.get("client_log", ""),
            **{k: v for k, v in info.items() if k.startswith("hold_")}}


def run_in_lab(lab: Lab, *, client_fw: tuple = (), host_fw: tuple = (), managed: bool = True,
               wait_udp: float = 10.0) -> dict:
    stack = start_stack(lab, managed=managed)
    if client_fw:
        lab.firewall("client", *client_fw)     # presets replace the site's set: apply together
    if host_fw:
        lab.firewall("host", *host_fw)
    t0 = time.monotonic()
    r = lab.python("client", *client_argv(stack, "--wait-udp", str(wait_udp), "--count", "20"),
                   check=False, timeout=wait_udp + 40)
    elapsed = time.monotonic() - t0
    if r.returncode != 0:
        dead = lab.helper_failures()
        return {"ok": False, "error": (r.stderr or r.stdout)[-1500:]
                + (f"\nhelpers that exited:\n{dead}" if dead else ""), "elapsed_s": elapsed}
    out = summarize(json.loads(r.stdout.strip().splitlines()[-1]))
    out.update({"client_log": r.stderr[-6000:], "elapsed_s": round(elapsed, 2)})
    return out


def run_scenario(client_nat: str = "port-restricted", host_nat: str = "port-restricted", *,
                 private_link: bool = False, **kw) -> dict:
    with Lab(client_nat=client_nat, host_nat=host_nat, private_link=private_link) as lab:
        out = run_in_lab(lab, **kw)
    out.update({"client_nat": client_nat, "host_nat": host_nat, "private_link": private_link})
    return out


def host_sessions(stack: dict) -> list:
    """The host's live sessions, from its local stats socket (what ``shortpath stats`` reads)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(str(stack["work"] / "h1" / "host-h1.sock"))
        s.sendall(b"stats\n")
        return json.loads(s.makefile().readline())["sessions"]


def wait_host_on_udp(stack: dict, timeout: float, client=None) -> bool:
    """Wait until the host reports its session on a UDP path (or the client process exits)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and (client is None or client.alive()):
        try:
            sessions = host_sessions(stack)
        except OSError:
            sessions = []
        if sessions and sessions[0]["transport"].startswith("udp"):
            return True
        time.sleep(0.1)
    return False


def run_captured(client_nat: str = "port-restricted", host_nat: str = "port-restricted", *,
                 private_link: bool = False, client_fw: tuple = (), hold: float = 4.0,
                 wait_udp: float = 10.0) -> tuple[dict, list[dict], dict]:
    """A held session while scapy captures on the client's LAN link.

    Capture phase 1 covers set-up on the relay; phase 2 starts once the host reports
    the session on UDP (or after ``wait_udp``). Returns (client info, phase
    summaries, lab addresses needed to judge them)."""
    import signal

    from . import capture

    with Lab(client_nat=client_nat, host_nat=host_nat, private_link=private_link) as lab:
        stack = start_stack(lab)
        if client_fw:
            lab.firewall("client", *client_fw)
        cap = capture.start(lab, "client", "lan", stack["work"] / "capture.json")
        live = lab.spawn("client", [sys.executable, *client_argv(stack, "--wait-udp", str(wait_udp),
                                                                 "--count", "5", "--hold", str(hold))],
                         env={"SHORTPATH_LOG": "INFO"})     # path changes in the log if it fails
        wait_host_on_udp(stack, wait_udp + 10, live)
        time.sleep(0.3)                      # let the switch-over replay drain before phase 2
        cap.next_phase()
        try:
            rc = live.popen.wait(wait_udp + hold + 60)
        except subprocess.TimeoutExpired:
            os.kill(live.pid, signal.SIGUSR2)      # the client prints its asyncio tasks' stacks
            time.sleep(1.0)
            raise RuntimeError(f"client hung past {wait_udp + hold + 60:.0f} s; its log and tasks:\n"
                               f"{live.log_path.read_text()[-6000:]}") from None
        phases = cap.stop()                  # raises with the helper's own error if it failed
        lines = [l for l in live.log_path.read_text().splitlines() if l.startswith("{")]
        if rc != 0 or not lines:
            dead = "\n".join(p.describe_exit() for p in lab.procs if p is not live and not p.alive())
            raise RuntimeError(f"client failed (rc={rc}): {_shortpath_lines(live.log_path.read_text())}\n"
                               f"host log:\n{_shortpath_lines(stack['host_proc'].log_path.read_text())}"
                               + (f"\nhelpers that exited:\n{dead}" if dead else ""))
        addrs = {"host_lan": lab.addr("host"), "host_public": lab.addr("host-public")}
        info = json.loads(lines[-1])
        info["client_log"] = live.log_path.read_text()[-6000:]
        return info, phases, addrs


def check_capture(path: str, phases: list[dict], addrs: dict) -> list[str]:
    """What the packets say about the path, as a list of problems (empty = consistent).

    After the upgrade (last phase): no session payload through the gateway; and
    udp-managed = DTLS to the host's LAN address on 3390; udp-direct = DTLS to the
    host site's public address, nothing via TURN; udp-turn = traffic to the TURN
    address and none straight to the host; tcp-relay = no DTLS at all."""
    after = phases[-1]
    gw = plan.SERVICES["gateway"]
    turn = plan.SERVICES["turn"]
    gw_tcp = sum(v for k, v in after["tcp_payload_bytes"].items() if gw in k)

    def dst(flow: str) -> str:
        return flow.split(">")[1].rsplit(":", 1)[0]

    dtls_to = {dst(k): v for k, v in after["dtls_records"].items() if k.startswith(("10.1.", "198.19.1."))}
    udp_to = {}
    for k, v in after["udp_bytes"].items():
        udp_to[dst(k)] = udp_to.get(dst(k), 0) + v
    problems = []
    if path == "tcp-relay":
        if after["dtls_records"]:
            problems.append(f"DTLS seen on a tcp-relay session: {after['dtls_records']}")
        if gw_tcp == 0:
            problems.append("no bytes through the gateway on a tcp-relay session")
        return problems
    # Session close (CLOSE frames, TLS close_notify through two TLS layers) still uses the
    # relay, a few hundred bytes; session payload would be a sizeable share of the UDP bytes.
    udp_total = sum(after["udp_bytes"].values()) + sum(
        v for k, v in after["tcp_payload_bytes"].items() if plan.SERVICES["turn"] in k)
    if gw_tcp > max(1024, 0.05 * udp_total):
        problems.append(f"{gw_tcp} bytes of TCP through the gateway after the upgrade "
                        f"(UDP path carried {udp_total})")
    if path == "udp-managed":
        flows = [k for k in after["dtls_records"] if k.endswith(f">{addrs['host_lan']}:{MANAGED_PORT}")]
        if not flows:
            problems.append(f"no DTLS to {addrs['host_lan']}:{MANAGED_PORT}")
    elif path == "udp-direct":
        if not dtls_to.get(addrs["host_public"]) and not dtls_to.get(addrs["host_lan"]):
            problems.append(f"no DTLS to the host site ({addrs['host_public']}): {dtls_to}")
        direct = udp_to.get(addrs["host_public"], 0) + udp_to.get(addrs["host_lan"], 0)
        # TURN allocation upkeep (refresh, deallocate) is a few small packets; session data is not
        if udp_to.get(turn, 0) > 0.05 * max(direct, 1):
            problems.append(f"{udp_to[turn]} UDP bytes to TURN against {direct} direct on a direct path")
    elif path == "udp-turn":
        turn_bytes = udp_to.get(turn, 0) + sum(v for k, v in after["tcp_payload_bytes"].items() if turn in k)
        if not turn_bytes:
            problems.append("no traffic to the TURN server on a turn path")
        if udp_to.get(addrs["host_public"]) or udp_to.get(addrs["host_lan"]):
            problems.append("UDP straight to the host on a turn path")
    return problems
