"""The engine's cost model: per-batch-size call times, interpolation, fast rise, slow fall, relaxing."""
from __future__ import annotations

import pytest

from musetalk.realtime.engine.render_cost import MARGIN, RenderCost


def test_unmeasured_cost_is_zero_and_unknown():
    cost = RenderCost()
    assert not cost.known and cost.estimate(16) == 0.0


def test_sizes_between_measured_ones_are_interpolated_and_larger_ones_scaled():
    cost = RenderCost()
    cost.generated(0.2, 1)
    cost.generated(0.8, 7)
    cost.finished(0.05)
    assert cost.known
    assert cost.estimate(1) == pytest.approx(MARGIN * 0.25)
    assert cost.estimate(3) == pytest.approx(MARGIN * (0.4 + 0.05))
    assert cost.estimate(14) == pytest.approx(MARGIN * (1.6 + 0.05))


def test_a_flat_cost_stays_flat():
    """A GPU-like call: as long for 4 frames as for 1, so 2 and 3 frames cost the same."""
    cost = RenderCost()
    cost.generated(0.1, 1)
    cost.generated(0.1, 4)
    assert cost.estimate(2) == cost.estimate(3) == pytest.approx(MARGIN * 0.1)


def test_slower_measurements_count_at_once_faster_ones_gently():
    cost = RenderCost(weight=0.2)
    cost.generated(1.0, 1)
    cost.generated(2.0, 1)
    assert cost.call_s[1] == pytest.approx(1.5)
    cost.generated(0.5, 1)
    assert cost.call_s[1] == pytest.approx(1.3)


def test_relax_decays_an_estimate_above_the_budget_towards_nine_tenths_of_it():
    cost = RenderCost(weight=0.2)
    cost.generated(5.0, 1)
    cost.relax(1.0)
    assert cost.call_s[1] == pytest.approx(4.0)
    for _ in range(50):
        cost.relax(1.0)
    assert cost.estimate(1) == pytest.approx(0.9)
    cost.relax(1.0)
    assert cost.estimate(1) == pytest.approx(0.9)
