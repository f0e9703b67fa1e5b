"""The session: what applications use, whatever path carries it.

    connection.py   the whole session protocol as one sans-I/O state machine (SessionConnection)
    events.py       what the core reports (DataReceived, PathSwitched, SessionEnded, ...)
    reliable.py     sequencing, cumulative acks, the ack clock (pure)
    session.py      Session: the asyncio pump around the core and the application API;
                    start_session(), the one way client and host assemble a session

Path choice lives next door, in shortpath/paths/.
"""
