"""The session host's side: register, keep the control channel, serve sessions."""

from .agent import HostAgent

__all__ = ["HostAgent"]
