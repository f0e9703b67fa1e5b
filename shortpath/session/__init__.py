"""The session: what applications use, whatever path carries it.

reliable.py and (later) the path manager are pure; session.py is the asyncio pump.
"""
