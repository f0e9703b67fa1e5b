"""Path choice (pure: events and ``now`` in, actions out; no I/O, no clock).

    path.py      path kinds, their quality, the sticky comparator ``better``
    manager.py   PathManager: which path a session sends on, probes, failover, return, upgrade retries
    actions.py   what the manager asks for (SwitchPath, SendProbe, StartUpgrade, ClosePath)

The session core (shortpath/session/connection.py) owns one PathManager and carries out its actions.
"""
