"""The operator's configuration of a manager: what it allows, which no domain spec can widen.

A domain spec is written by whoever may apply domains; the machine the manager runs on belongs to
the operator. So what a spec may reach on this machine or send elsewhere is decided here, in a file
the operator owns (``$POOL_CONFIG``, else ``{state dir}/config.yaml``):

```yaml
credentials: ["env:AWS_ACCESS_KEY_ID", "env:AWS_SECRET_ACCESS_KEY", "file:/etc/elastic-pool/keys/*"]
endpoints: ["ec2.*.amazonaws.com", "127.0.0.1:*"]   # where a site's options may point its driver
worker_env: ["JAVA_HOME", "MY_APP_*"]               # the manager's variables local workers receive
```

Each list holds shell-style patterns (``fnmatch``); every list is empty by default: a spec then may
name no credential reference and point no driver at an endpoint of its own, and local workers get
only a small fixed environment. Imports only the standard library, yaml and ``pool.core.model``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from pool.core.model import SiteSpec

#: Site option names that choose where a driver sends its requests (and so its credentials).
ENDPOINT_OPTIONS = frozenset({"host", "port", "secure", "url", "endpoint", "endpoint_url", "base_url", "api_url",
                              "auth_url", "ex_force_auth_url", "ex_force_base_url", "ex_force_service_region",
                              "path", "proxy_url", "ex_tenant_name"})
#: Built-in sites and the options a spec may give them (the local site: none; it runs here).
BUILTIN_SITE_OPTIONS: Mapping[str, frozenset[str]] = {"local": frozenset(), "sim": frozenset()}

#: What every local worker gets from the manager's environment, whatever the configuration says.
BASE_WORKER_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TMPDIR", "TERM",
                   "SHELL", "JAVA_HOME", "C_FORCE_ROOT")


class ConfigError(ValueError):
    """The operator's configuration file is unreadable, unsafe or malformed (one line)."""


@dataclass(frozen=True)
class OperatorConfig:
    credentials: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()
    worker_env: tuple[str, ...] = ()
    source: str = "defaults"

    @classmethod
    def from_mapping(cls, data: Any, *, source: str) -> "OperatorConfig":
        if data is None:
            return cls(source=source)
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping with credentials, endpoints, worker_env")
        unknown = sorted(set(data) - {"credentials", "endpoints", "worker_env"})
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} (allowed: credentials, endpoints, worker_env)")
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("credentials", "endpoints", "worker_env"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= 512 for v in value):
                raise ConfigError(f"{source}: {key} must be a list of patterns (strings)")
            lists[key] = tuple(value)
        return cls(credentials=lists["credentials"], endpoints=lists["endpoints"], worker_env=lists["worker_env"],
                   source=source)

    @classmethod
    def load(cls, path: str | Path | None = None) -> "OperatorConfig":
        """``path``, else ``$POOL_CONFIG``, else ``{state dir}/config.yaml``; missing: the defaults.

        A file that others may write is refused: it decides what specs may reach.
        """
        if path is None:
            path = os.environ.get("POOL_CONFIG") or None
        if path is None:
            from pool.state.redisserver import state_dir

            path = state_dir() / "config.yaml"
            if not path.exists():
                return cls()
        path = Path(path)
        try:
            st = path.stat()
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the operator configuration {path}: {getattr(exc, 'strerror', exc)}") \
                from None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or st.st_uid not in (0, os.getuid()):
            raise ConfigError(f"{path}: others may write it; it must be owned by you (or root) and not group- or "
                              "world-writable (chmod 600)")
        try:
            data = yaml.safe_load(text) if len(text) <= 65536 else None
        except yaml.YAMLError:
            raise ConfigError(f"{path}: not valid YAML") from None
        return cls.from_mapping(data, source=str(path))

    # -- what a spec may use ----------------------------------------------------------------
    def allows_credential(self, ref: str) -> bool:
        return any(fnmatch.fnmatchcase(ref, pattern) for pattern in self.credentials)

    def allows_endpoint(self, host: str, port: object | None) -> bool:
        where = f"{host}:{port}" if port is not None else host
        return any(fnmatch.fnmatchcase(where, p) or fnmatch.fnmatchcase(host, p) and port is None
                   for p in self.endpoints)

    def site_refusal(self, site: SiteSpec) -> str | None:
        """Why this configuration does not allow the site (one line, no secret in it), or ``None``."""
        if site.provider is None:
            allowed = BUILTIN_SITE_OPTIONS.get(site.name)
            if allowed is not None and set(site.options) - allowed:
                return (f"site {site.name}: option {sorted(set(site.options) - allowed)[0]!r} is not allowed "
                        "(the built-in sites take no options in a spec)")
            return None
        for what, ref in (("key", site.key), ("secret", site.secret)):
            if ref is not None and not self.allows_credential(ref):
                return (f"site {site.name}: {what} reference {ref!r} is not among the credential references the "
                        f"operator allows ({self.source}: credentials: {list(self.credentials)})")
        if site.key is None and site.secret is None and site.provider.lower() == "ec2":
            for ref in ("env:AWS_ACCESS_KEY_ID", "env:AWS_SECRET_ACCESS_KEY"):
                if not self.allows_credential(ref):
                    return (f"site {site.name}: the default credential reference {ref!r} is not among the ones the "
                            f"operator allows ({self.source}: credentials: {list(self.credentials)})")
        pointed = {k: v for k, v in site.options.items() if k in ENDPOINT_OPTIONS}
        if pointed:
            host = str(pointed.get("host") or pointed.get("url") or pointed.get("endpoint")
                       or pointed.get("endpoint_url") or pointed.get("base_url") or pointed.get("api_url")
                       or pointed.get("auth_url") or pointed.get("ex_force_auth_url")
                       or pointed.get("ex_force_base_url") or "")
            if not host or not self.allows_endpoint(host, pointed.get("port")):
                where = f"{host}:{pointed['port']}" if "port" in pointed else host or ", ".join(sorted(pointed))
                return (f"site {site.name}: endpoint {where!r} is not among the endpoints the operator allows "
                        f"({self.source}: endpoints: {list(self.endpoints)})")
        return None

    def worker_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The part of ``environ`` a local worker inherits: the fixed base plus ``worker_env``."""
        patterns = (*BASE_WORKER_ENV, *self.worker_env)
        return {k: v for k, v in environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
