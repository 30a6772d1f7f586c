"""Where a device's actor runs: the ``node`` of its profile, resolved against the cluster.

A phone is driven only by the machine it is plugged into, so its actor must land there.
``node`` may name a Ray node by id (``ray list nodes``), by IP address or host name, or by
a custom resource that host was started with (``ray start --resources '{"bench-rack-2": 1}'``);
without it, the device is driven from the driver's own node. Everything here is pure: it
reads the node table Ray gives (``ray.nodes()``) and never talks to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latbench.exceptions import UserInputError

__all__ = ["Placement", "resolve_node", "RESOURCE_SHARE"]

#: How much of a custom resource one device actor takes: a small share, so that one
#: resource per host (``{"rack-2": 1}``) places any number of devices there.
RESOURCE_SHARE = 0.001


@dataclass(frozen=True)
class Placement:
    """Where one device actor goes: a node (hard affinity) or a custom resource.

    ``asked`` is the profile's ``node`` value (``None``: the driver's node).
    """

    asked: str | None
    node_id: str | None = None
    resource: str | None = None

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ActorClass.options`` that place the actor."""
        if self.resource is not None:
            return {"resources": {self.resource: RESOURCE_SHARE}}
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # soft=False: a phone's host that is gone must not be replaced by another machine.
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(self.node_id, soft=False)}


def resolve_node(device: str, node: str | None, nodes: Sequence[Mapping[str, Any]],
                 driver_node_id: str) -> Placement:
    """Resolve a profile's ``node`` against ``nodes`` (the entries of ``ray.nodes()``).

    Parameters
    ----------
    device : str
        The device's name, for messages.
    node : str or None
        A node id, an IP address or host name, or a custom resource name; ``None`` places
        the device on ``driver_node_id``.
    nodes : sequence of mappings
        ``ray.nodes()``: each with ``NodeID``, ``Alive``, ``NodeManagerAddress``,
        ``NodeManagerHostname`` and ``Resources``.
    driver_node_id : str
        The node the driver runs on.

    Raises
    ------
    UserInputError
        If ``node`` names nothing alive in the cluster, or an address that several nodes
        share; the message lists what the cluster has.
    """
    if node is None:
        return Placement(None, node_id=driver_node_id)
    alive = [n for n in nodes if n.get("Alive")]
    want = node.strip()
    by_id = [n for n in nodes if str(n.get("NodeID", "")).lower() == want.lower()]
    if by_id:
        if not by_id[0].get("Alive"):
            raise UserInputError(f"device {device!r}: Ray node {want} is not alive; start Ray "
                                 "on the host the device is plugged into, or fix node = ...")
        return Placement(node, node_id=str(by_id[0]["NodeID"]))
    by_addr = [n for n in alive if want in (n.get("NodeManagerAddress"),
                                            n.get("NodeManagerHostname"))]
    if len(by_addr) == 1:
        return Placement(node, node_id=str(by_addr[0]["NodeID"]))
    if len(by_addr) > 1:
        ids = ", ".join(str(n["NodeID"]) for n in by_addr)
        raise UserInputError(f"device {device!r}: {len(by_addr)} Ray nodes run at {want!r} "
                             f"({ids}); name one by its node id, or by a custom resource")
    if any(want in (n.get("Resources") or {}) for n in alive):
        return Placement(node, resource=want)
    addresses = sorted({str(n.get("NodeManagerAddress")) for n in alive})
    custom = sorted({r for n in alive for r in (n.get("Resources") or {})
                     if r not in _BUILTIN_RESOURCES and not r.startswith("node:")})
    raise UserInputError(
        f"device {device!r}: node = {want!r} is neither a node id, an address nor a custom "
        f"resource of the Ray cluster (addresses: {', '.join(addresses) or 'none'}; custom "
        f"resources: {', '.join(custom) or 'none'}); fix node = ... in its devices.toml table")


_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "TPU", "memory", "object_store_memory",
                                "accelerator_type"})
