"""Per-driver-family argument mapping: how launch, tags, images, sizes and credentials look to each libcloud driver."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

from libcloud.compute.base import Node, NodeDriver, NodeImage, NodeSize
from libcloud.compute.drivers.ec2 import BaseEC2NodeDriver, EC2NodeDriver

#: Tag keys the pool puts on every machine it launches.
from pool.core.keys import TAG_DOMAIN, TAG_LAUNCH, TAG_NODE  # noqa: E402,F401  (one definition, re-exported)


class UnknownOffering(LookupError):
    """An image or size the site does not have, or that the deployable type does not name."""


class DriverAdapter:
    """The generic mapping, for drivers the pool knows nothing special about.

    User-data goes as ``ex_userdata`` (the name most libcloud drivers use). There is no client
    token and no portable way to tag, so idempotency comes from looking before launching again:
    a machine carrying the launch id in its tags, or named after the node, is that launch's.
    """

    name = "generic"
    client_token = False  # the driver makes create_node idempotent under a token
    batch = False  # the driver can launch several machines in one call

    def launch_kwargs(self, *, userdata: str, token: str, tags: Mapping[str, str],
                      count: int | None = None) -> dict[str, Any]:
        if count is not None:
            raise ValueError(f"{self.name} drivers launch one machine per call (asked for {count})")
        return {"ex_userdata": userdata}

    def destroy_kwargs(self, *, grace: float) -> dict[str, Any]:
        return {}

    def list_kwargs(self) -> dict[str, Any]:
        """Arguments to ``list_nodes`` that narrow the listing to the pool's machines, where the site can."""
        return {}

    def node_tags(self, node: Node) -> dict[str, str]:
        """The machine's tags (EC2 and the project's drivers: ``extra['tags']``; OpenStack: ``metadata``; GCE: ``labels``)."""
        extra = node.extra or {}
        for key in ("tags", "metadata", "labels"):
            value = extra.get(key)
            if isinstance(value, dict) and value:
                return value  # the driver's own dict, not a copy: listings of thousands of nodes read it per tick
        return {}

    def find_launched(self, driver: NodeDriver, *, launch_id: str, name: str) -> Node | None:
        """The machine an earlier try of this launch made, if the site lists one."""
        named = None
        for node in driver.list_nodes(**self.list_kwargs()):
            if self.node_tags(node).get(TAG_LAUNCH) == launch_id:
                return node
            if named is None and node.name == name:
                named = node
        return named

    def image(self, driver: NodeDriver, image_id: str) -> NodeImage:
        try:
            return driver.get_image(image_id)
        except NotImplementedError:
            pass
        for image in driver.list_images():
            if image.id == image_id or image.name == image_id:
                return image
        raise UnknownOffering(f"image {image_id!r} not found on this site")

    def size(self, driver: NodeDriver, size_id: str) -> NodeSize:
        for size in driver.list_sizes():
            if size.id == size_id or size.name == size_id:
                return size
        raise UnknownOffering(f"size {size_id!r} not found on this site")

    def default_image(self, driver: NodeDriver) -> NodeImage:
        return driver.list_images()[0]

    def default_size(self, driver: NodeDriver) -> NodeSize:
        return driver.list_sizes()[0]


class ElasticAdapter(DriverAdapter):
    """The project's own drivers (``local``, ``sim``): idempotent under ``ex_client_token``, tags in ``ex_tags``."""

    name = "elastic"
    client_token = True

    def __init__(self, *, batch: bool) -> None:
        self.batch = batch

    def launch_kwargs(self, *, userdata: str, token: str, tags: Mapping[str, str],
                      count: int | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ex_userdata": userdata, "ex_client_token": token, "ex_tags": dict(tags)}
        if count is not None:
            if not self.batch:
                raise ValueError(f"this site launches one machine per call (asked for {count})")
            kwargs["ex_count"] = count
        return kwargs

    def destroy_kwargs(self, *, grace: float) -> dict[str, Any]:
        return {"ex_grace": grace}

    def image(self, driver: NodeDriver, image_id: str) -> NodeImage:
        for image in driver.list_images():  # a short, local catalogue
            if image.id == image_id or image.name == image_id:
                return image
        raise UnknownOffering(f"image {image_id!r} not found on this site")


class EC2Adapter(DriverAdapter):
    """libcloud's EC2 driver (and the drivers built on it).

    Client token as ``ex_clienttoken``, tags as ``ex_metadata`` (sent as a TagSpecification with
    the launch, so a machine is never untagged), batches as ``ex_mincount``/``ex_maxcount``. Tags
    come back in ``node.extra['tags']``. Images and sizes are built from their ids, never listed:
    the public image catalogue is tens of thousands of entries.
    """

    name = "ec2"
    client_token = True
    batch = True

    def launch_kwargs(self, *, userdata: str, token: str, tags: Mapping[str, str],
                      count: int | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"ex_userdata": userdata, "ex_clienttoken": token, "ex_metadata": dict(tags)}
        if count is not None:
            kwargs["ex_mincount"] = count
            kwargs["ex_maxcount"] = count
        return kwargs

    def list_kwargs(self) -> dict[str, Any]:
        return {"ex_filters": {"tag-key": TAG_NODE}}

    def find_launched(self, driver: NodeDriver, *, launch_id: str, name: str) -> Node | None:
        nodes = driver.list_nodes(ex_filters={f"tag:{TAG_LAUNCH}": launch_id})  # type: ignore[call-arg]
        return nodes[0] if nodes else None

    def image(self, driver: NodeDriver, image_id: str) -> NodeImage:
        return NodeImage(id=image_id, name=image_id, driver=driver)

    def size(self, driver: NodeDriver, size_id: str) -> NodeSize:
        # RunInstances sends size.id as InstanceType; nothing else of the size is read
        return NodeSize(id=size_id, name=size_id, ram=0, disk=0, bandwidth=None,
                        price=None, driver=driver)  # type: ignore[arg-type]  # price unknown, not zero

    def default_image(self, driver: NodeDriver) -> NodeImage:
        raise UnknownOffering("an EC2 site needs an image id (ami-...) for the deployable type: "
                          "the public image catalogue is not a sensible default")

    def default_size(self, driver: NodeDriver) -> NodeSize:
        raise UnknownOffering("an EC2 site needs an instance type (size) for the deployable type")


class TokenlessEC2Adapter(EC2Adapter):
    """An EC2-compatible API that ignores ``ClientToken``: launches are made idempotent by tag lookup."""

    name = "ec2-tokenless"
    client_token = False

    def launch_kwargs(self, *, userdata: str, token: str, tags: Mapping[str, str],
                      count: int | None = None) -> dict[str, Any]:
        if count is not None:
            raise ValueError("without client tokens a site launches one machine per call")
        kwargs = super().launch_kwargs(userdata=userdata, token=token, tags=tags)
        del kwargs["ex_clienttoken"]
        return kwargs


GENERIC = DriverAdapter()
_lock = threading.Lock()
_by_class: list[tuple[type[NodeDriver], DriverAdapter]] = [(BaseEC2NodeDriver, EC2Adapter())]
_by_type: dict[str, DriverAdapter] = {"elastic_local": ElasticAdapter(batch=False),
                                      "elastic_sim": ElasticAdapter(batch=True)}


def register(driver_cls: type[NodeDriver], adapter: DriverAdapter) -> None:
    """Use ``adapter`` for drivers of ``driver_cls`` (and its subclasses); later registrations win."""
    with _lock:
        _by_class.insert(0, (driver_cls, adapter))


def adapter_for(driver: NodeDriver) -> DriverAdapter:
    """The adapter of a driver's family: registered classes first, then the provider type, else generic."""
    for cls, adapter in _by_class:
        if isinstance(driver, cls):
            return adapter
    return _by_type.get(str(getattr(driver, "type", "")), GENERIC)


def launch_kwargs(driver: NodeDriver, *, userdata: str, token: str, tags: Mapping[str, str],
                  count: int | None = None) -> dict[str, Any]:
    """``create_node`` keyword arguments (besides name, image and size) for this driver's family."""
    return adapter_for(driver).launch_kwargs(userdata=userdata, token=token, tags=tags, count=count)


def supports_client_token(driver: NodeDriver) -> bool:
    """Whether a repeated launch with the same token is answered with the first launch's machine."""
    return adapter_for(driver).client_token


def node_tags(node: Node) -> dict[str, str]:
    """A listed machine's tags, whatever its driver calls them."""
    return adapter_for(node.driver).node_tags(node) if node.driver is not None else GENERIC.node_tags(node)


def resolve_image(driver: NodeDriver, image_id: str | None) -> NodeImage:
    """The image object for an id (the site's first image when ``None``); raises UnknownOffering."""
    adapter = adapter_for(driver)
    return adapter.default_image(driver) if image_id is None else adapter.image(driver, image_id)


def resolve_size(driver: NodeDriver, size_id: str | None) -> NodeSize:
    """The size object for an id or instance type (the site's first size when ``None``); raises UnknownOffering."""
    adapter = adapter_for(driver)
    return adapter.default_size(driver) if size_id is None else adapter.size(driver, size_id)


# -- credentials by reference ------------------------------------------------------------------
def secret_from(ref: str) -> str:
    """Read a credential named by reference: ``env:NAME`` or ``file:/path``; never a literal value."""
    kind, _, where = ref.partition(":")
    if kind == "env" and where:
        try:
            return os.environ[where]
        except KeyError:
            raise LookupError(f"credential reference {ref!r}: environment variable {where} is not set") from None
    if kind == "file" and where:
        try:
            return Path(where).read_text().strip()
        except OSError as exc:
            raise LookupError(f"credential reference {ref!r}: {exc.strerror}") from None
    raise ValueError("a credential reference must be env:NAME or file:/path (a literal value is refused and not shown)")


def ec2_driver(*, region: str, key: str = "env:AWS_ACCESS_KEY_ID", secret: str = "env:AWS_SECRET_ACCESS_KEY",
               host: str | None = None, port: int | None = None, secure: bool = True) -> EC2NodeDriver:
    """libcloud's EC2 driver with credentials read from references (``env:NAME`` / ``file:/path``).

    Signature version 4 always: libcloud 3.9 defaults some regions to version 2, which current
    EC2 endpoints (and EC2-compatible servers) refuse.
    """
    return EC2NodeDriver(secret_from(key), secret_from(secret), secure=secure, host=host, port=port,
                         region=region, signature_version="4")
