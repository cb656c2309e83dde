"""Realised-placement warnings."""

import pandas as pd

from scaleprof.analysis.placement import placement_warning


def test_placement_warning_when_realised_differs():
    starts = pd.DataFrame({"node_id": ["n1", "n1"], "gpu_uuid": [None, None]})
    assert placement_warning(2, 0, starts) == "asked for 2 node(s), the workers ran on 1"
    assert placement_warning(None, 0, starts) == ""
    shared = pd.DataFrame({"node_id": ["n1", "n1"], "gpu_uuid": ["GPU-a", "GPU-a"]})
    assert "share a GPU" in placement_warning(None, 1, shared)
