"""Scenarios: the real shortpath gateway, host and client processes inside a lab.

``run_scenario(client_nat=..., host_nat=..., ...)`` builds a lab, starts coturn
and the gateway in the core, a host behind the host NAT (managed Shortpath on
its LAN address, UDP 3390), runs ``shortpath connect --json`` in the client
namespace and returns what the session reported: the path it ended on, the
candidate types of the selected pair, time to relay first byte and time to UDP.
"""

from __future__ import annotations

import json
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


def start_stack(lab: Lab, *, managed: bool = True) -> dict:
    """coturn + gateway in the core, host h1 behind the host NAT. Returns the paths a client needs."""
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
    (work / "host.tok").write_text(signer.mint("host", "h1", DEFAULT_GATEWAY_ID, 3600, now, pool="desktop"))
    (work / "user.tok").write_text(signer.mint("user", "alice", DEFAULT_GATEWAY_ID, 3600, now,
                                               resources=["desktop"]))
    py = sys.executable
    lab.spawn("core", [py, "-m", "shortpath", "gateway", "--config", str(cfg), "--state", str(state)],
              ready="gateway-ready", ready_timeout=15)
    host_argv = [py, "-m", "shortpath", "host", "--gateway", f"{plan.SERVICES['gateway']}:443",
                 "--host-id", "h1", "--token-file", str(work / "host.tok"), "--ca", str(state / "gateway.crt"),
                 "--state", str(work / "h1"), "--turn-ca", str(turn.cert)]
    if managed:
        host_argv += ["--managed", f"{lab.addr('host')}:{MANAGED_PORT}"]
    lab.spawn("host", host_argv, ready="host-registered", ready_timeout=15)
    return {"work": work, "state": state, "turn_cert": str(turn.cert)}


def client_argv(stack: dict, *extra: str) -> list[str]:
    return ["-m", "shortpath", "connect", "--gateway", f"{plan.SERVICES['gateway']}:443",
            "--token-file", str(stack["work"] / "user.tok"), "--ca", str(stack["state"] / "gateway.crt"),
            "--json", "--turn-ca", stack["turn_cert"], *extra]


def summarize(info: dict) -> dict:
    udp = next((p for p in info["paths"] if p["kind"] != "tcp-relay"), None)
    return {"ok": True, "path": info["transport"], "setup_ms": info["setup_ms"],
            "time_to_udp_ms": None if info.get("time_to_udp") is None else round(info["time_to_udp"] * 1000, 1),
            "echo_rtt_p50_ms": info["echo_rtt_p50_ms"],
            "local_candidate": udp and udp.get("local_candidate"),
            "remote_candidate": udp and udp.get("remote_candidate"),
            "history": info["history"], **{k: v for k, v in info.items() if k.startswith("hold_")}}


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
        return {"ok": False, "error": (r.stderr or r.stdout)[-1500:], "elapsed_s": elapsed}
    out = summarize(json.loads(r.stdout.strip().splitlines()[-1]))
    out.update({"client_log": r.stderr[-6000:], "elapsed_s": round(elapsed, 2)})
    return out


def run_scenario(client_nat: str = "port-restricted", host_nat: str = "port-restricted", *,
                 private_link: bool = False, **kw) -> dict:
    with Lab(client_nat=client_nat, host_nat=host_nat, private_link=private_link) as lab:
        out = run_in_lab(lab, **kw)
    out.update({"client_nat": client_nat, "host_nat": host_nat, "private_link": private_link})
    return out
