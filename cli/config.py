"""Where the CLI finds the API and its key: flags, then the environment, then a profile file.

The profile file is TOML (``~/.config/fleetops/config.toml``, or the file ``FLEETOPS_CONFIG``
names), one table per profile::

    [default]
    url = "http://127.0.0.1:8080"
    api_key = "<id>.<secret>"

    [prod]
    url = "https://fleet.example.com"
    api_key = "<id>.<secret>"
    ca_file = "/etc/fleetops/ca.pem"      # verify the API's certificate with this CA
    cert_file = "/etc/fleetops/me.pem"    # mutual TLS: present this client certificate
    key_file = "/etc/fleetops/me.key"

Flags and ``FLEETOPS_*`` variables override the profile field by field (Typer reads the variables
into the flags, so "a flag or its variable" is one value here).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from cli.errors import UsageProblem

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PROFILE = "default"
DEFAULT_TIMEOUT_S = 30.0
CONFIG_ENV = "FLEETOPS_CONFIG"


@dataclass(frozen=True)
class Settings:
    """Everything needed to reach the north API."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT_S

    def merged(self, **given: Any) -> Settings:
        """These settings with every given value put over them (None or an empty string, as an
        empty environment variable gives, is no value)."""
        return replace(self, **{k: v for k, v in given.items() if v not in (None, "")})


_FIELDS = {f.name for f in fields(Settings)}


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fleetops" / "config.toml"


def read_profile(path: Path, name: str | None) -> dict[str, Any]:
    """The values of profile ``name`` in ``path`` (``default`` when not named: a file or a
    default profile that does not exist is no error, a named one that does not exist is)."""
    if not path.is_file():
        if name is not None:
            raise UsageProblem(f"profile {name!r} asked for, but there is no config file {path}")
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageProblem(f"cannot read the config file {path}: {exc}") from exc
    profile = document.get(name or DEFAULT_PROFILE)
    if profile is None:
        if name is not None:
            known = ", ".join(sorted(k for k, v in document.items() if isinstance(v, dict)))
            raise UsageProblem(f"no profile {name!r} in {path} (profiles: {known or 'none'})")
        return {}
    if not isinstance(profile, dict):
        raise UsageProblem(f"[{name or DEFAULT_PROFILE}] in {path} is not a table")
    unknown = sorted(set(profile) - _FIELDS)
    if unknown:
        raise UsageProblem(
            f"unknown keys in profile {name or DEFAULT_PROFILE!r} of {path}: {', '.join(unknown)}"
            f" (known: {', '.join(sorted(_FIELDS))})"
        )
    return _checked(profile, path)


def _checked(profile: dict[str, Any], path: Path) -> dict[str, Any]:
    for key, value in profile.items():
        wanted = (int, float) if key == "timeout" else (str,)
        if not isinstance(value, wanted):
            raise UsageProblem(
                f"{key} in {path} must be a {'number' if key == 'timeout' else 'string'}"
            )
    # Relative certificate paths are read from the config file's directory.
    for key in ("ca_file", "cert_file", "key_file"):
        if key in profile:
            profile[key] = str((path.parent / Path(profile[key]).expanduser()).resolve())
    return profile


def resolve(profile: str | None = None, **given: Any) -> Settings:
    """The settings of ``profile`` (the file's ``default`` when None), overridden by the given
    flags (already including their environment variables)."""
    settings = Settings(**read_profile(config_path(), profile)).merged(**given)
    settings = replace(settings, url=settings.url.rstrip("/"))
    if not settings.url.startswith(("http://", "https://")):
        raise UsageProblem(f"the API URL must start with http:// or https://, not {settings.url!r}")
    if settings.key_file and not settings.cert_file:
        raise UsageProblem("a client key file needs its certificate file (--cert)")
    return settings
