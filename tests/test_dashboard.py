"""The dashboard in headless Chromium (Debian's chromium and chromium-driver, driven by selenium)
against a real API server on the session's Redis, with a real manager ticking on the simulated site.

`make test` installs the two packages (scripts/ensure-debian-packages.sh); these tests skip, saying
why, only where that is impossible. The operator's test saves the screenshot docs/dashboard.png when POOL_SCREENSHOT is set.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from pool.api.auth import create_token
from pool.core.model import parse_domain_spec
from pool.state.store import Store
from tests.conftest import wait
from tests.test_watch import SimPool, sim_pool, sim_spec

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "dashboard.png"
PACKAGES = ("chromium", "chromium-driver")


def _chromium() -> tuple[str, str] | str:
    """``(browser, driver)`` paths, installing the Debian packages when missing; else why not."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if None in found:
        script = ROOT / "scripts" / "ensure-debian-packages.sh"
        proc = subprocess.run(["bash", str(script), "dashboard", "chromium chromedriver", *PACKAGES],
                              capture_output=True, text=True, timeout=900)
        found = shutil.which("chromium"), shutil.which("chromedriver")
        if None in found:
            said = (proc.stderr or proc.stdout).strip().splitlines()
            return (f"headless Chromium unavailable: {' '.join(PACKAGES)} could not be installed"
                    + (f" ({said[-1]})" if said else ""))
    return found[0] or "", found[1] or ""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    found = _chromium()
    if isinstance(found, str):
        pytest.skip(found)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1360,1000", "--force-device-scale-factor=1", "--no-first-run",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def pool(store: Store, redis_url: str) -> Iterator[SimPool]:
    with sim_pool(store, redis_url) as p:
        yield p


@contextlib.contextmanager
def serving(pool: SimPool) -> Iterator[str]:
    """The API and the dashboard served on 127.0.0.1 and a free port: the base URL."""
    from pool.api.app import create_app
    from pool.api.server import serve

    server = serve(create_app(store=pool.store, poll=0.2), host="127.0.0.1", port=0)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def api(pool: SimPool) -> Iterator[str]:
    with serving(pool) as url:
        yield url


def a_busy_hour(pool: SimPool, queue: str) -> None:
    """The last hour lived again by the manager: work that comes in two waves (for the plot)."""
    def depth(t: float) -> int:
        return max(0, round(14 * math.sin(math.pi * t / 1500) ** 2 + (8 if 2000 < t < 2600 else 0)))

    pool.replay(queue, depth, span=3600.0, step=20.0)


def sign_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(url + "/")
    box = driver.find_element(By.ID, "token")
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def card(driver: Any, name: str, timeout: float = 10.0) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, f'.card[data-domain="{name}"]')))


def text_of(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def events(driver: Any) -> list[tuple[str, str]]:
    """The decision log as shown: ``(kind, text)`` of each entry, read at once (it is redrawn live)."""
    found = driver.execute_script(
        "return [...document.querySelectorAll('#events .event')].map(e => [e.dataset.kind, e.textContent])")
    return [(str(k), str(t)) for k, t in found]


def event_by(driver: Any, who: str, kind: str) -> bool:
    return any(k == kind and f"by {who}" in text for k, text in events(driver))


def test_operator_resizes_with_plus_arrows_and_pause(browser: Any, store: Store, redis_url: str) -> None:
    q = f"q-{uuid.uuid4().hex[:6]}"
    store.put_domain(parse_domain_spec(sim_spec("web", queue=q)))
    store.put_domain(parse_domain_spec(sim_spec("batch", queue=q + "-b", max_size=20)))
    with sim_pool(store, redis_url, before=lambda p: a_busy_hour(p, q)) as pool, serving(pool) as api:
        operate(browser, api, pool, q)


def operate(browser: Any, api: str, pool: SimPool, q: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    assert len(pool.store.readings("web", time.time() - 3600)) > 100  # the hour lived again
    pool.queue(q, 7)  # 7 tasks at 5 per worker: 2 workers
    wait(lambda: pool.store.get_state("web").intended == 2 and pool.live("web") == 2, 20, "web at 2 workers")
    token = create_token(pool.store, "ops-alice", "operator", now=time.time())
    sign_in(browser, api, token)
    web = card(browser, "web")
    assert text_of(browser, "#who") == "ops-alice (operator)"
    WebDriverWait(browser, 5).until(lambda d: web.find_element(By.CSS_SELECTOR, ".intended").text == "2")
    assert web.find_element(By.CSS_SELECTOR, ".actual").text == "2"
    assert "queue_depth" in web.find_element(By.CSS_SELECTOR, ".meta").text
    WebDriverWait(browser, 5).until(lambda d: "live" == d.find_element(By.ID, "conn").text)

    web.find_element(By.CSS_SELECTOR, "button.plus").click()
    # the change's event, with the operator's name, arrives on the live stream within a second
    WebDriverWait(browser, 1.0, poll_frequency=0.05).until(lambda d: event_by(d, "ops-alice", "resize"))
    assert pool.store.get_state("web").override == 3
    WebDriverWait(browser, 5).until(lambda d: web.find_element(By.CSS_SELECTOR, ".intended").text == "3")
    assert web.find_element(By.CSS_SELECTOR, ".mode").text == "override 3"

    web.click()  # focus the card: arrow keys resize it
    web.send_keys(Keys.ARROW_DOWN)
    wait(lambda: pool.store.get_state("web").override == 2, 5, "arrow down to reach the store")
    web.send_keys(Keys.ARROW_UP, Keys.ARROW_UP)
    wait(lambda: pool.store.get_state("web").override == 4, 5, "two arrows up to reach the store")
    WebDriverWait(browser, 5).until(lambda d: web.find_element(By.CSS_SELECTOR, ".intended").text == "4")

    web.find_element(By.CSS_SELECTOR, "button.pause").click()
    WebDriverWait(browser, 2).until(lambda d: web.find_element(By.CSS_SELECTOR, ".mode").text == "paused by ops-alice")
    assert pool.store.marks().paused_by("web") == "ops-alice"
    WebDriverWait(browser, 2).until(lambda d: event_by(d, "ops-alice", "pause"))
    assert web.find_element(By.CSS_SELECTOR, "button.pause").text == "resume"
    web.find_element(By.CSS_SELECTOR, "button.pause").click()
    WebDriverWait(browser, 2).until(lambda d: web.find_element(By.CSS_SELECTOR, ".mode").text == "override 4")
    assert pool.store.marks().paused_by("web") is None

    # at the domain's max, + is disabled
    pool.store.set_override("web", 6)
    WebDriverWait(browser, 5).until(lambda d: web.find_element(By.CSS_SELECTOR, ".intended").text == "6")
    assert not web.find_element(By.CSS_SELECTOR, "button.plus").is_enabled()
    wait(lambda: pool.live("web") == 6, 20, "6 workers")
    WebDriverWait(browser, 5).until(
        lambda d: "joined 6" in web.find_element(By.CSS_SELECTOR, ".states").text)
    nodes = browser.find_elements(By.CSS_SELECTOR, '#nodes .node[data-state="JOINED"]')
    assert len(nodes) == 6, [n.text for n in nodes]
    assert browser.find_elements(By.CSS_SELECTOR, "#plot path.series.actual")
    if os.environ.get("POOL_SCREENSHOT"):  # `POOL_SCREENSHOT=1 make test` renews docs/dashboard.png
        browser.set_window_size(1360, 1240)
        try:
            browser.save_screenshot(str(SCREENSHOT))
        finally:
            browser.set_window_size(1360, 1000)


def test_viewer_sees_no_buttons_and_untrusted_text_stays_text(browser: Any, api: str, pool: SimPool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue="q-view")))
    hostile = '<img src=x onerror="window.__owned=1"><script>window.__owned=2</script>'
    pool.store.record("web", "note", time.time(), said=hostile)
    token = create_token(pool.store, "viewer-bob", "viewer", now=time.time())
    sign_in(browser, api, token)
    web = card(browser, "web")
    assert text_of(browser, "#who") == "viewer-bob (viewer)"
    WebDriverWait(browser, 5).until(lambda d: any(hostile in text for _, text in events(d)))
    assert browser.find_elements(By.CSS_SELECTOR, "#events img, #events script") == []
    assert browser.execute_script("return window.__owned === undefined")
    assert web.find_elements(By.CSS_SELECTOR, "button") == []
    assert [b.text for b in browser.find_elements(By.TAG_NAME, "button") if b.is_displayed()] == ["sign out"]
    web.click()
    web.send_keys(Keys.ARROW_UP)  # arrows do nothing for a viewer (and the API would refuse it: 403)
    pool.store.record("web", "note", time.time(), said="after the arrow")
    WebDriverWait(browser, 5).until(lambda d: any("after the arrow" in text for _, text in events(d)))
    assert pool.store.get_state("web").override is None
    assert "resize" not in [kind for kind, _ in events(browser)]


def test_a_refused_token_asks_again(browser: Any, api: str, pool: SimPool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue="q-x")))
    sign_in(browser, api, "pool_" + "x" * 43)
    WebDriverWait(browser, 5).until(lambda d: "refused" in d.find_element(By.ID, "login-error").text)
    assert browser.find_element(By.ID, "app").get_attribute("hidden") is not None
    assert browser.execute_script("return sessionStorage.length") == 0


def test_the_live_stream_comes_back_after_the_server_restarts(browser: Any, pool: SimPool) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pool.api.app import create_app
    from pool.api.server import serve

    pool.store.put_domain(parse_domain_spec(sim_spec("web", queue="q-r")))
    token = create_token(pool.store, "viewer-carol", "viewer", now=time.time())
    server = serve(create_app(store=pool.store, poll=0.2), host="127.0.0.1", port=0)
    port = server.port
    try:
        sign_in(browser, server.url, token)
        card(browser, "web")
        WebDriverWait(browser, 5).until(lambda d: d.find_element(By.ID, "conn").text == "live")
        server.stop()
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "conn").text.startswith("reconnecting"))
        pool.store.record("web", "note", time.time(), said="while the server was away")
        server = serve(create_app(store=pool.store, poll=0.2), host="127.0.0.1", port=port)
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "conn").text == "live")
        # what happened meanwhile is read again on reconnecting, and the stream carries on
        WebDriverWait(browser, 5).until(lambda d: any("while the server was away" in t for _, t in events(d)))
        pool.store.record("web", "note", time.time(), said="after the restart")
        WebDriverWait(browser, 2).until(lambda d: any("after the restart" in t for _, t in events(d)))
        assert browser.find_element(By.ID, "app").get_attribute("hidden") is None  # still signed in
    finally:
        server.stop()
