"""The gateway: TLS listener, leg stitching, bounded relay. It never picks a host."""

from .server import Gateway

__all__ = ["Gateway"]
