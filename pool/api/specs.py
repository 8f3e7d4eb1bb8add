"""Validating a domain spec as every face does before storing it: the spec's own rules, its plug-ins
(policy, sensor, deployable type), its sites (this machine's, or a libcloud provider) and what the
operator's configuration allows. Raises :class:`~pool.core.model.SpecError` with one line naming the field.

Shared by the CLI (`pool apply`) and the REST API (`PUT /domains/{name}`); imports ``policies``,
``sensors``, ``pool.core``, ``pool.sites`` and ``pool.workloads``, never a face.
"""

from __future__ import annotations

from typing import Any

from pool.core.model import PluginParamError, SpecError, UnknownPlugin, parse_domain_spec
from pool.sites.config import ConfigError, OperatorConfig
from pool.workloads.base import workload_for_type

#: Sites that `pool up` runs domains on.
LIVE_SITES = ("local",)


def validate_spec(data: Any) -> Any:
    """Validate a spec and its plug-ins; raise with one line naming the field."""
    from policies import registry as policies
    from pool.sites.registry import BUILTIN_SITES
    from pool.workloads.images import deployable_type
    from sensors import registry as sensors

    spec = parse_domain_spec(data)
    try:
        policies.build(spec.policy.name, spec.policy.params)
    except (UnknownPlugin, PluginParamError) as exc:
        raise SpecError(f"invalid domain spec: policy: {exc}") from None
    try:
        sensors.resolve(spec.sensor.name)
        if spec.sensor.name != "celery":
            sensors.build(spec.sensor.name, spec.sensor.params)
        else:
            params = dict(spec.sensor.params)
            params.setdefault("broker", spec.broker or "redis://127.0.0.1/1")
            sensors.build("celery", params)
    except (UnknownPlugin, PluginParamError) as exc:
        raise SpecError(f"invalid domain spec: sensor: {exc}") from None
    try:
        deployable_type(spec.deployable_type)
    except UnknownPlugin as exc:
        raise SpecError(f"invalid domain spec: deployable_type: {exc}") from None
    from libcloud.compute.providers import Provider

    providers = {v for k, v in vars(Provider).items() if not k.startswith("_") and isinstance(v, str)}
    for i, site in enumerate(spec.sites):
        where = "site" if isinstance(data, dict) and "sites" not in data else f"sites.{i}"
        if site.provider is None and site.name not in LIVE_SITES:
            other = " (sim runs under `pool simulate`)" if site.name in BUILTIN_SITES else ""
            raise SpecError(f"invalid domain spec: {where}: unknown site {site.name!r}{other}; valid: "
                            f"{', '.join(LIVE_SITES)}, or any name with provider: (a libcloud provider, e.g. ec2)")
        if site.provider is not None and site.provider.lower() not in providers:
            raise SpecError(f"invalid domain spec: {where}.provider: unknown libcloud provider {site.provider!r} "
                            "(e.g. ec2, gce, azure_arm, openstack)")
    try:
        workload_for_type(spec.deployable_type).check(spec)
    except (ValueError, UnknownPlugin) as exc:
        raise SpecError(f"invalid domain spec: {exc}") from None
    try:
        config = OperatorConfig.load()
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    for i, site in enumerate(spec.sites):
        refusal = config.site_refusal(site)
        if refusal is not None:
            where = "site" if isinstance(data, dict) and "sites" not in data else f"sites.{i}"
            raise SpecError(f"invalid domain spec: {where}: {refusal}")
    return spec
