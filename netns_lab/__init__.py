"""netns_lab: real kernel NAT, firewalls, link impairment and coturn in Linux network namespaces.

Start with ``Lab`` (``netns_lab.lab``); ``docs/lab.md`` has the address plan and the design.
"""

from .impair import Impairment, gilbert_elliott
from .lab import Lab
from .nat import NAT_TYPES
from .netns import LabError, Node, Proc
from .probe import NatReport

__all__ = ["Lab", "Node", "Proc", "LabError", "Impairment", "gilbert_elliott", "NAT_TYPES",
           "NatReport"]
