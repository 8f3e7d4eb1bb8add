"""The provisioner through libcloud's real EC2 driver, against a local EC2 API (moto server behind an adapting proxy)."""

from __future__ import annotations

import base64
import random
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from libcloud.compute.drivers.ec2 import EC2NodeDriver

from pool.core.model import NodeRecord
from pool.sites import adapters
from pool.sites.provisioner import CapacityError, PermanentError, Provisioner, RetryableError
from tests.moto_ec2 import Ec2Proxy, Fault, MotoServer, moto_ec2

SITE = "ec2"
AMI = "ami-0e0bd3b6ad8b1d6d0"  # moto does not validate image ids unless told to
TYPE = "t3.micro"
KEY_ENV, SECRET_ENV = "EP_TEST_EC2_KEY_ID", "EP_TEST_EC2_SECRET"
SECRET = "fake-secret-for-moto-0123456789"


class TokenlessEC2(EC2NodeDriver):
    """An EC2-compatible site that ignores ClientToken (moto as it is): idempotency by tag lookup."""


adapters.register(TokenlessEC2, adapters.TokenlessEC2Adapter())


@pytest.fixture(scope="module")
def ec2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MotoServer, Ec2Proxy]]:
    with moto_ec2(tmp_path_factory.mktemp("moto")) as pair:
        yield pair


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials by reference: the driver reads them from these variables, the tests never pass them inline."""
    monkeypatch.setenv(KEY_ENV, "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv("LIBCLOUD_RETRY_FAILED_HTTP_REQUESTS", raising=False)  # libcloud must not retry by itself


def driver_for(port: int, cls: type[EC2NodeDriver] = EC2NodeDriver) -> EC2NodeDriver:
    if cls is EC2NodeDriver:
        return adapters.ec2_driver(region="us-east-1", key=f"env:{KEY_ENV}", secret=f"env:{SECRET_ENV}",
                                   host="127.0.0.1", port=port, secure=False)
    return cls(adapters.secret_from(f"env:{KEY_ENV}"), adapters.secret_from(f"env:{SECRET_ENV}"),
               secure=False, host="127.0.0.1", port=port, region="us-east-1", signature_version="4")


def provisioner(driver: EC2NodeDriver, *, cap: float = 8.0) -> Provisioner:
    prov = Provisioner({SITE: driver}, backoff_base=1.0, backoff_cap=cap)
    prov.backoff[SITE].rng = random.Random(7)
    return prov


def record(domain: str = "web") -> NodeRecord:
    tail = uuid.uuid4().hex[:8]
    return NodeRecord(node_id=f"{domain}-{tail}", domain=domain, launch_id=f"L-{tail}", site=SITE,
                      deployable_type="worker")


def tags_for(rec: NodeRecord) -> dict[str, str]:
    return {"elastic-pool/domain": rec.domain, "elastic-pool/launch": rec.launch_id, "elastic-pool/node": rec.node_id}


def instances_of(driver: EC2NodeDriver, launch_id: str) -> list[str]:
    """Instance ids the site holds for a launch, found by a full listing (not the provisioner's filter)."""
    return [str(n.id) for n in driver.list_nodes() if (n.extra.get("tags") or {}).get("elastic-pool/launch") == launch_id]


def test_launch_retry_tags_list_terminate(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    driver = driver_for(proxy.port)
    prov = provisioner(driver)
    rec = record()
    userdata = "#!/bin/bash\necho joining web\n"

    first = prov.launch(rec, userdata=userdata, now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
    again = prov.launch(rec, userdata=userdata, now=1.0, tags=tags_for(rec), image=AMI, size=TYPE)

    assert first.startswith("i-") and again == first
    assert instances_of(driver, rec.launch_id) == [first]  # the retry made no second machine
    runs = [c for c in proxy.actions("RunInstances") if c.params.get("ClientToken") == rec.launch_id]
    assert [c.answered_by for c in runs] == ["moto", "token-replay"]  # both went out with the launch id as token
    sent = runs[0].params
    assert (sent["ImageId"], sent["InstanceType"], sent["MinCount"], sent["MaxCount"]) == (AMI, TYPE, "1", "1")
    assert base64.b64decode(sent["UserData"]).decode() == userdata
    # images and sizes are built from their ids: the public catalogue is never listed
    assert not proxy.actions("DescribeImages") and not proxy.actions("DescribeInstanceTypes")

    node = next(n for n in driver.list_nodes() if n.id == first)
    assert {k: node.extra["tags"].get(k) for k in ("elastic-pool/domain", "elastic-pool/launch",
                                                    "elastic-pool/node", "Name")} == {
        "elastic-pool/domain": "web", "elastic-pool/launch": rec.launch_id,
        "elastic-pool/node": rec.node_id, "Name": rec.node_id}

    listed = prov.list(SITE)
    seen = listed[rec.node_id]
    assert (seen.provider_id, seen.running, seen.alive) == (first, True, True)
    assert seen.tags["elastic-pool/domain"] == "web"

    rec.provider_id = first
    prov.terminate(rec, grace=5.0, now=2.0)
    after = prov.list(SITE).get(rec.node_id)
    assert after is None or (not after.alive and not after.running)
    prov.terminate(rec, grace=5.0, now=3.0)  # idempotent: ending an ended machine is no error
    assert prov.available(SITE, 3.0) and SITE not in prov.broken


def test_token_reused_with_other_arguments_fails_the_launch_not_the_site(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    driver = driver_for(proxy.port)
    prov = provisioner(driver)
    rec = record()
    first = prov.launch(rec, userdata="#!/bin/bash\necho a\n", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
    with pytest.raises(PermanentError, match="IdempotentParameterMismatch"):
        prov.launch(rec, userdata="#!/bin/bash\necho b\n", now=1.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert instances_of(driver, rec.launch_id) == [first]
    assert SITE not in prov.broken and prov.available(SITE, 1.0)


def test_missing_image_is_a_configuration_error_and_nothing_is_listed(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    prov = provisioner(driver_for(proxy.port))
    rec = record()
    before = len(proxy.calls)
    with pytest.raises(PermanentError, match="image id"):
        prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), size=TYPE)
    assert len(proxy.calls) == before  # no request at all: neither a catalogue listing nor a launch
    assert SITE not in prov.broken


def test_throttling_backs_the_site_off_with_a_bounded_delay(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    driver = driver_for(proxy.port)
    cap = 8.0
    prov = provisioner(driver, cap=cap)
    rec = record()

    proxy.fail_next(1)  # HTTP 503 RequestLimitExceeded, as EC2 throttles
    with pytest.raises(RetryableError, match="RequestLimitExceeded") as info:
        prov.launch(rec, userdata="", now=100.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert not isinstance(info.value, CapacityError)
    assert proxy.calls[-1].answered_by == "fault" and proxy.calls[-1].action == "RunInstances"
    delay = info.value.delay
    assert 0.0 < delay <= cap
    assert not prov.available(SITE, 100.0)
    assert prov.available(SITE, 100.0 + delay)
    assert instances_of(driver, rec.launch_id) == []

    delays = []
    now = 100.0 + delay
    for _ in range(6):  # throttled again and again: the delay grows but never past the cap
        proxy.fail_next(1)
        with pytest.raises(RetryableError) as info:
            prov.launch(rec, userdata="", now=now, tags=tags_for(rec), image=AMI, size=TYPE)
        delays.append(info.value.delay)
        assert not prov.available(SITE, now)
        now += info.value.delay
    assert all(0.0 <= d <= cap for d in delays)
    assert prov.backoff[SITE].failures == 7

    made = prov.launch(rec, userdata="", now=now, tags=tags_for(rec), image=AMI, size=TYPE)
    assert prov.available(SITE, now) and prov.backoff[SITE].failures == 0
    assert instances_of(driver, rec.launch_id) == [made]


def test_http_429_with_retry_after_is_honoured(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    prov = provisioner(driver_for(proxy.port), cap=8.0)
    rec = record()
    proxy.fail_next(1, Fault(status=429, code="Throttling", message="Rate exceeded", retry_after=5))
    with pytest.raises(RetryableError, match="throttled") as info:  # libcloud's RateLimitReachedError
        prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert info.value.delay >= 5.0
    assert not prov.available(SITE, 4.9) and prov.available(SITE, info.value.delay)


def test_capacity_error_is_retryable_and_leaves_the_site_usable(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    driver = driver_for(proxy.port)
    prov = provisioner(driver)
    rec = record()
    proxy.fail_next(1, Fault(status=500, code="InsufficientInstanceCapacity",
                             message="We currently do not have sufficient t3.micro capacity in the "
                                     "Availability Zone you requested."))
    with pytest.raises(CapacityError):
        prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert SITE not in prov.broken
    assert instances_of(driver, rec.launch_id) == []


def test_unauthorized_operation_marks_the_site_broken_and_stops_calling(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    _, proxy = ec2
    prov = provisioner(driver_for(proxy.port))
    rec = record()
    proxy.fail_next(1, Fault(status=403, code="UnauthorizedOperation",
                             message="You are not authorized to perform this operation."))
    with pytest.raises(PermanentError, match="UnauthorizedOperation"):
        prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert SITE in prov.broken and not prov.available(SITE, 1e9)
    before = len(proxy.calls)
    with pytest.raises(PermanentError, match="broken"):
        prov.launch(rec, userdata="", now=1.0, tags=tags_for(rec), image=AMI, size=TYPE)
    assert len(proxy.calls) == before  # not hammered


def test_refused_credentials_from_the_server(tmp_path: Path) -> None:
    """moto with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT=0``) refuses keys it does not know: AuthFailure."""
    with moto_ec2(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as (_, proxy):
        prov = provisioner(driver_for(proxy.port))
        rec = record()
        with pytest.raises(PermanentError, match="credentials refused.*AuthFailure") as info:
            prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
        assert proxy.calls[-1].status == 401 and proxy.calls[-1].answered_by == "moto"
        assert SITE in prov.broken and not prov.available(SITE, 1e9)
        assert SECRET not in str(info.value) and SECRET not in prov.broken[SITE]
        before = len(proxy.calls)
        with pytest.raises(PermanentError):
            prov.launch(rec, userdata="", now=1.0, tags=tags_for(rec), image=AMI, size=TYPE)
        assert len(proxy.calls) == before


def test_site_without_client_tokens_looks_before_launching_again(ec2: tuple[MotoServer, Ec2Proxy]) -> None:
    """moto itself ignores ClientToken: with the proxy's emulation off, the tag lookup alone keeps launches single."""
    server, _ = ec2
    proxy = Ec2Proxy(server.port, emulate_client_token=False).start()
    try:
        driver = driver_for(proxy.port, TokenlessEC2)
        assert not adapters.supports_client_token(driver)
        prov = provisioner(driver)
        rec = record("batch")
        first = prov.launch(rec, userdata="", now=0.0, tags=tags_for(rec), image=AMI, size=TYPE)
        again = prov.launch(rec, userdata="", now=1.0, tags=tags_for(rec), image=AMI, size=TYPE)
        assert again == first
        assert instances_of(driver, rec.launch_id) == [first]
        runs = proxy.actions("RunInstances")
        assert len(runs) == 1 and "ClientToken" not in runs[0].params
        assert prov.list(SITE)[rec.node_id].provider_id == first
    finally:
        proxy.stop()


def test_adapter_mappings(tmp_path: Path) -> None:
    """The argument names each driver family takes, and credential references."""
    from pool.sites.local import LocalNodeDriver
    from pool.sites.sim import SimNodeDriver

    ec2 = EC2NodeDriver("k", "s", region="us-east-1", signature_version="4")
    tags = {"elastic-pool/launch": "L1"}
    assert adapters.launch_kwargs(ec2, userdata="u", token="L1", tags=tags, count=3) == {
        "ex_userdata": "u", "ex_clienttoken": "L1", "ex_metadata": tags, "ex_mincount": 3, "ex_maxcount": 3}
    size = adapters.resolve_size(ec2, "c7g.large")
    assert (size.id, adapters.resolve_image(ec2, AMI).id) == ("c7g.large", AMI)
    with pytest.raises(LookupError):
        adapters.resolve_image(ec2, None)

    sim = SimNodeDriver(ex_clock=lambda: 0.0)
    assert adapters.launch_kwargs(sim, userdata="u", token="L1", tags=tags, count=2) == {
        "ex_userdata": "u", "ex_client_token": "L1", "ex_tags": tags, "ex_count": 2}
    assert adapters.resolve_image(sim, None).id == "sim-image"
    with pytest.raises(LookupError):
        adapters.resolve_size(sim, "no-such-size")
    local = LocalNodeDriver(ex_state_dir=str(tmp_path / "local"))
    assert adapters.adapter_for(local).destroy_kwargs(grace=3.0) == {"ex_grace": 3.0}
    with pytest.raises(ValueError):  # the local site launches one process group per call
        adapters.launch_kwargs(local, userdata="u", token="L1", tags=tags, count=2)

    assert adapters.secret_from(f"env:{SECRET_ENV}") == SECRET
    with pytest.raises(LookupError, match="EP_TEST_NOT_SET"):
        adapters.secret_from("env:EP_TEST_NOT_SET")
    with pytest.raises(ValueError) as refused:
        adapters.secret_from(SECRET)  # a literal is refused, and not echoed back
    assert SECRET not in str(refused.value)
