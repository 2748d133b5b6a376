"""Prices per model, costs in nano-USD, GPU-hour pricing of local models, and budget windows."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from iir_common.budget_window import valid_duration, window
from iir_gateway.accounting.prices import FREE, Price, built_in_price
from iir_gateway.providers.config import ProviderConfig
from iir_gateway.providers.external import ExternalProvider
from iir_registry.resource_mapping import token_prices


def test_built_in_prices_match_dated_versions_by_the_longest_prefix() -> None:
    assert built_in_price("openai", "gpt-4o-2024-08-06") == built_in_price("openai", "gpt-4o")
    mini = built_in_price("openai", "gpt-4o-mini-2024-07-18")
    sonnet = built_in_price("anthropic", "claude-sonnet-4-5-20250929")
    assert mini is not None and mini.input == 0.15  # not gpt-4o's
    assert sonnet is not None and sonnet.output == 15.0
    assert built_in_price("openai", "my-fine-tune") is None


def test_the_providers_file_overrides_a_built_in_price() -> None:
    config = ProviderConfig.model_validate(
        {"base_url": "https://api.openai.com/v1", "models": {"gpt-4o": {"price": {"input": 1, "output": 2}}}}
    )
    provider = ExternalProvider("openai", config, states=None)  # type: ignore[arg-type]
    assert provider.price("gpt-4o") == Price(input=1, output=2)
    assert provider.price("gpt-4o-mini").input == 0.15  # not configured: built in
    assert provider.price("unheard-of") == FREE
    with pytest.raises(ValueError):
        ProviderConfig.model_validate({"base_url": "https://x", "models": {"m": {"price": {"input": -1}}}})


def test_cost_counts_cached_input_at_its_own_price() -> None:
    price = Price(input=2.5, cached_input=1.25, output=10)
    # 1,000 prompt tokens of which 400 cached, 100 out: 600×2.5 + 400×1.25 + 100×10 = 3,000 µUSD.
    assert price.cost_nano(1000, 400, 100) == 3_000_000
    assert Price(input=1, output=1).cost_nano(10, 10, 0) == 10_000  # no cached price: the input price
    assert price.cost_nano(10, 50, 0) == price.cost_nano(10, 10, 0)  # never more cached than prompted


def test_local_prices_from_a_gpu_hour() -> None:
    assert token_prices({"inputPerMillion": 0.2, "outputPerMillion": 0.6}, 1) == (0.2, 0.6)
    per_million = 2.5 * 2 / (1500 * 3600) * 1e6
    assert token_prices({"gpuHourUSD": 2.5, "tokensPerSecond": 1500}, 2) == (per_million, per_million)
    assert token_prices({"gpuHourUSD": "x", "tokensPerSecond": 1}, 1) == (0.0, 0.0)
    assert token_prices({}, 1) == (0.0, 0.0)


def test_budget_windows() -> None:
    now = datetime(2026, 12, 2, 15, 30, tzinfo=UTC).timestamp()
    day = window("1d", now)
    assert day.ends_at == datetime(2026, 12, 3, tzinfo=UTC).timestamp() and window("day", now) == day
    assert window("7d", now).ends_at - now <= 7 * 86400
    month = window("month", now)
    assert month.name == "2026-12" and month.ends_at == datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert window("", now).name == "all" and window("", now).ttl_s(now) > 86400
    assert window("12h", now).ends_at == datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    for good in ("", "day", "month", "30m", "12h", "30d"):
        assert valid_duration(good)
    for bad in ("1w", "0d", "d", "-1d", "1.5d", "100000d"):
        assert not valid_duration(bad)
