"""The client's side: list the feed, launch a resource, get a Session."""

from .connect import connect, feed

__all__ = ["connect", "feed"]
