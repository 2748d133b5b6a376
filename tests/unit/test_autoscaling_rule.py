"""The autoscaler's rule and stabilisation windows, from given figures."""

from __future__ import annotations

import pytest

from iir_operator.autoscaling.rule import AutoscalingSpec, Figures, recommend
from iir_operator.autoscaling.stabilizer import Stabilizer


def spec(**autoscaling: object) -> AutoscalingSpec:
    parsed = AutoscalingSpec.of({"autoscaling": {"maxReplicas": 8, **autoscaling}})
    assert parsed is not None
    return parsed


def test_no_autoscaling_without_a_maximum() -> None:
    assert AutoscalingSpec.of({}) is None
    assert AutoscalingSpec.of({"autoscaling": {"minReplicas": 0}}) is None


@pytest.mark.parametrize(
    ("figures", "want"),
    [
        (Figures(ready=2, running=20, waiting=10, held=2), 2),  # 32 / 16
        (Figures(ready=2, running=32, waiting=16), 3),  # 48 / 16
        (Figures(ready=2, running=200), 8),  # capped at maxReplicas
        (Figures(ready=3), 1),  # no load: minReplicas
    ],
)
def test_requests_per_replica(figures: Figures, want: int) -> None:
    assert recommend(spec(), figures, idle_s=0)[0] == want


def test_kv_cache_target_can_ask_for_more_than_the_requests() -> None:
    figures = Figures(ready=2, running=4, kv_cache_usage=0.9)
    replicas, why = recommend(spec(targetKVCacheUsage=0.6), figures, idle_s=0)
    assert replicas == 3 and "KV cache 90% / 60% on 2 = 3" in why


def test_scale_to_zero_only_after_the_idle_window() -> None:
    s = spec(minReplicas=0, scaleToZeroAfterSeconds=60)
    assert recommend(s, Figures(ready=1), idle_s=59)[0] == 1
    replicas, why = recommend(s, Figures(ready=1), idle_s=61)
    assert replicas == 0 and "no request for 61s" in why
    assert recommend(s, Figures(ready=0, held=1), idle_s=0)[0] == 1  # a held request brings one back


def test_windows_scale_up_to_the_lowest_and_down_to_the_highest_recommendation() -> None:
    st2 = Stabilizer()
    st2.apply("m", 2, 2, now=0, up_s=10, down_s=30)
    assert st2.apply("m", 4, 2, now=5, up_s=10, down_s=30) == 2  # a 2 within 10 s holds it at 2
    assert st2.apply("m", 4, 2, now=11, up_s=10, down_s=30) == 4  # the 2 left the window
    assert st2.apply("m", 1, 4, now=20, up_s=10, down_s=30) == 4  # the 4s of the last 30 s hold it up
    assert st2.apply("m", 1, 4, now=42, up_s=10, down_s=30) == 1


def test_no_window_acts_at_once() -> None:
    st = Stabilizer()
    assert st.apply("m", 5, 1, now=0, up_s=0, down_s=0) == 5
    assert st.apply("m", 1, 5, now=1, up_s=0, down_s=0) == 1
