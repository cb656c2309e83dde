"""The fabric probe on the shared two-node Ray: one worker per node (STRICT_SPREAD) crosses the nodes' link."""

import math

import pytest

from scaleprof.analysis.fabric import fit_fabric
from scaleprof.execution.fabric_probe import ProbeRefused, probe_fabric

pytestmark = pytest.mark.slow


def test_strict_spread_probes_the_inter_node_link_and_its_sweep_fits(ray_session):
    with pytest.raises(ProbeRefused, match="needs 3 node"):  # refused at once, before any worker starts
        probe_fabric(3, strategy="STRICT_SPREAD", cpus_per_worker=0.5)  # CPUs enough, nodes not
    sizes = [4 * 2**10, 64 * 2**10, 2**20]
    frame = probe_fabric(2, strategy="STRICT_SPREAD", sizes=sizes, repeats=3, warmup=1)
    alive = {node["NodeID"] for node in ray_session.nodes() if node["Alive"]}
    node_ids = frame.attrs["node_ids"]
    assert len(node_ids) == 2 and len(set(node_ids)) == 2 and set(node_ids) <= alive
    assert set(frame["link_class"]) == {"inter-node"} and set(frame["backend"]) == {"gloo"}
    assert set(frame["world"]) == {2} and sorted(set(frame["bytes"])) == sizes and len(frame) == 3 * len(sizes)
    assert (frame["time_s"] > 0).all() and frame.attrs["sweep_s"] > 0
    (fit,) = fit_fabric(frame)
    assert (fit.backend, fit.link_class, fit.points) == ("gloo", "inter-node", len(frame))
    if fit.valid:  # two "nodes" on one machine talk over loopback: noisy, so the structure, not a figure
        assert 0 < fit.bandwidth_bytes_per_s < math.inf
    else:
        assert fit.invalid_reason
