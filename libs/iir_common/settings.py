"""Base class for every service's settings: `IIR_`-prefixed environment variables.

Any setting can also be read from a file named by `IIR_<NAME>_FILE` (a mounted Secret), which wins over
the variable itself: database URLs, Redis URLs with passwords and keys need not sit in the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _FileSource(PydanticBaseSettingsSource):
    """`IIR_<NAME>_FILE`: the setting's value is the file's content, stripped."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        values = {}
        for name in self.settings_cls.model_fields:
            path = os.environ.get(f"{prefix}{name.upper()}_FILE")
            if path:
                try:
                    values[name] = Path(path).read_text().strip()
                except OSError as exc:
                    raise ValueError(f"{prefix}{name.upper()}_FILE: cannot read {path}: {exc}") from None
        return values


class IIRSettings(BaseSettings):
    """Common settings; each service subclasses it with its own fields."""

    model_config = SettingsConfigDict(env_prefix="IIR_", extra="ignore", env_file=None)

    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _FileSource(settings_cls), env_settings, dotenv_settings, file_secret_settings
