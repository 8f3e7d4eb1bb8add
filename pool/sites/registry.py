"""Sites: the project's own libcloud drivers, registered with libcloud, and the site registry."""

from __future__ import annotations

from typing import Any

from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import get_driver, set_driver

from pool.core.model import UnknownPlugin

_REGISTERED = False


def register_drivers() -> None:
    """Make the project's drivers known to libcloud's ``get_driver``."""
    global _REGISTERED
    if _REGISTERED:
        return
    set_driver("elastic_local", "pool.sites.local", "LocalNodeDriver")  # type: ignore[arg-type]
    set_driver("elastic_sim", "pool.sites.sim", "SimNodeDriver")  # type: ignore[arg-type]
    _REGISTERED = True


#: Built-in site names and the libcloud provider they use.
BUILTIN_SITES = {"local": "elastic_local", "sim": "elastic_sim"}


def make_driver(site: str, **kwargs: Any) -> NodeDriver:
    """A driver for a site name; unknown names list the valid ones."""
    register_drivers()
    provider = BUILTIN_SITES.get(site)
    if provider is None:
        raise UnknownPlugin(f"unknown site {site!r}; valid: {', '.join(sorted(BUILTIN_SITES))}")
    cls = get_driver(provider)
    return cls(**kwargs)  # type: ignore[no-any-return]
