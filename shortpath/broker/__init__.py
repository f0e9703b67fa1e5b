"""The broker: who may launch what, and which host gets the session.

registry.py is pure (no I/O, takes ``now``); service.py drives it from asyncio.
"""
