"""Every `IIR_` setting of every service appears in the README's settings table."""

from __future__ import annotations

from pathlib import Path

from iir_auth.settings import AuthSettings
from iir_classifier.settings import ClassifierSettings
from iir_gateway.settings import GatewaySettings
from iir_operator.settings import OperatorSettings
from iir_registry.settings import RegistrySettings
from iir_simbackend.settings import SimSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = []
    for cls in (GatewaySettings, AuthSettings, RegistrySettings, ClassifierSettings, OperatorSettings, SimSettings):
        prefix = cls.model_config["env_prefix"]
        for name in cls.model_fields:
            var = f"`{prefix}{name.upper()}`"
            if var not in README:
                missing.append(var)
    assert not missing, f"settings missing from README.md: {missing}"
