"""Settings of dynamiq-otel: the schema (``Settings``) and how it is loaded (``load_settings``)."""

from config.loading import MASK, SettingsError, env_names, load_settings, masked
from config.settings import Settings

__all__ = ["MASK", "Settings", "SettingsError", "env_names", "load_settings", "masked"]
