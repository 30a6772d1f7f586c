"""Where a device's actor goes (``node`` of its profile) and the host gate that keeps
compression off a host while it measures on its own CPU: pure logic, no Ray cluster."""

from __future__ import annotations

import asyncio

import pytest

from latbench.concurrency import this_process
from latbench.exceptions import UserInputError
from latbench.farm.gate import HostGate
from latbench.farm.placement import RESOURCE_SHARE, resolve_node

NODES = [
    {"NodeID": "aa" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.1",
     "NodeManagerHostname": "rack1", "Resources": {"CPU": 8.0, "node:10.0.0.1": 1.0,
                                                   "phones-rack1": 1.0}},
    {"NodeID": "bb" * 28, "Alive": True, "NodeManagerAddress": "10.0.0.2",
     "NodeManagerHostname": "rack2", "Resources": {"CPU": 8.0, "node:10.0.0.2": 1.0}},
    {"NodeID": "cc" * 28, "Alive": False, "NodeManagerAddress": "10.0.0.3",
     "NodeManagerHostname": "rack3", "Resources": {"CPU": 8.0}},
]
DRIVER = "bb" * 28


@pytest.mark.parametrize("node,node_id,resource", [
    (None, DRIVER, None),                 # default: the driver's host
    ("aa" * 28, "aa" * 28, None),         # a node id
    ("AA" * 28, "aa" * 28, None),         # ... in any case
    ("10.0.0.1", "aa" * 28, None),        # an address
    ("rack2", "bb" * 28, None),           # a host name
    ("phones-rack1", None, "phones-rack1"),  # a custom resource
])
def test_a_profile_node_resolves_to_a_node_or_a_custom_resource(node, node_id, resource):
    p = resolve_node("pixel", node, NODES, DRIVER)
    assert (p.node_id, p.resource) == (node_id, resource)
    if resource is not None:
        assert p.actor_options() == {"resources": {resource: RESOURCE_SHARE}}


@pytest.mark.parametrize("node,fragment", [
    ("cc" * 28, "is not alive"),
    ("10.0.0.3", "neither a node id"),      # a dead node's address is not a place to go
    ("rack9", "addresses: 10.0.0.1, 10.0.0.2; custom resources: phones-rack1"),
])
def test_a_node_the_cluster_does_not_have_is_one_clear_error(node, fragment):
    with pytest.raises(UserInputError, match="device 'pixel'") as e:
        resolve_node("pixel", node, NODES, DRIVER)
    assert fragment in str(e.value)


def test_an_address_several_nodes_share_must_be_named_by_node_id():
    twins = [dict(NODES[0]), {**NODES[0], "NodeID": "dd" * 28}]
    with pytest.raises(UserInputError, match="2 Ray nodes run at '10.0.0.1'"):
        resolve_node("pixel", "10.0.0.1", twins, DRIVER)


def run(coro_fn):
    return asyncio.run(coro_fn())


def test_a_measurement_waits_for_running_builds_and_holds_new_ones_back():
    me = str(this_process())  # a live process of this host
    order: list[str] = []

    async def scenario():
        gate = HostGate()
        await gate.enter_build(me)
        writer = asyncio.create_task(gate.begin_measure(me))
        await asyncio.sleep(0.15)
        assert not writer.done()  # a build runs: the measurement waits
        reader = asyncio.create_task(gate.enter_build(me))
        await asyncio.sleep(0.15)
        assert not reader.done()  # a measurement waits: new builds wait behind it
        await gate.leave_build(me)
        await writer
        order.append("measure")
        assert (await gate.state())["writer"] == me
        await asyncio.sleep(0.15)
        assert not reader.done()  # ... and while it measures
        await gate.end_measure(me)
        await reader
        order.append("build")
        assert (await gate.state()) == {"readers": 1, "writer": None, "writers_waiting": 0}

    run(scenario)
    assert order == ["measure", "build"]


def test_a_holder_whose_process_died_does_not_block_the_gate_forever():
    dead = f"{this_process().host}:999999999:1"  # no such pid

    async def scenario():
        gate = HostGate()
        await gate.enter_build(dead)  # a build worker that was kill -9-ed inside the gate
        await asyncio.wait_for(gate.begin_measure(str(this_process())), 2.0)
        await gate.end_measure(str(this_process()))
        await gate.begin_measure(dead)  # a device actor that died while measuring
        await asyncio.wait_for(gate.enter_build(str(this_process())), 2.0)

    run(scenario)
