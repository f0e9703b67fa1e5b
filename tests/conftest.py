import os
import sys

import pytest

from shortpath.config import Timing

#: Timing for loopback tests: fast heartbeats and reconnects so failure tests take seconds.
FAST = Timing(heartbeat_interval=0.3, heartbeat_misses=3, reconnect_base=0.05, reconnect_cap=0.5,
              handshake_timeout=5.0, leg_timeout=5.0, launch_timeout=10.0, ping_interval=0.5)


@pytest.fixture
def fast_timing():
    return FAST


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
