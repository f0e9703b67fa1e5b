"""Pure wire formats: no asyncio, no sockets. See frames.py for the byte layouts."""
