"""
The dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a real C{twist plugmgr} with
a C{[web]} section, running the example plugins; the CLI reloads through
the real control channel.

Skipped, saying why, only where chromium or its driver is absent (.ci/run
installs them). C{PLUGMGR_SCREENSHOTS=1} also saves docs/dashboard.png.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests._browser import Browser, Client, browser_missing

if browser_missing() is None:
    from selenium.webdriver.support.expected_conditions import staleness_of
from tests._processes import REPO, Daemon, make_home, write_config

MISSING = browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no browser: {MISSING}")

TOKEN = "dashboard-s3cret"

CONFIG = f"""
[manager]
paths = ["plugins"]

[plugins.greeter]
data = {{ greeting = "hi" }}

[plugins.reporter]
data = {{ interval = 1 }}

[plugins.archiver]

[web]
endpoint = "tcp:0:interface=127.0.0.1"
token = "{TOKEN}"
"""


@pytest.fixture(scope="module")
def browser():
    if MISSING is not None:
        pytest.skip(MISSING)
    b = Browser()
    yield b
    b.quit()


@pytest_twisted.async_yield_fixture(scope="module")
async def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("web-home")
    make_home(home)
    shutil.rmtree(home / "plugins")
    shutil.copytree(os.path.join(REPO, "examples", "plugins"), home / "plugins")
    write_config(home, CONFIG)
    d = Daemon(home, "--config", str(home / "plugmgr.toml"))
    try:
        await d.ready()
        await d.proto.wait_for("web: dashboard and /metrics on http://")
        d.url = re.search(r"web: dashboard and /metrics on (http://\S+/)", d.proto.text).group(1)
        yield d
    finally:
        if d.transport is not None and not d.proto.ended.called:
            d.signal("TERM")
            await d.ended()


def cell(driver, plugin, name):
    # Read in one script: the rows are replaced as updates come, so an
    # element found first could be gone when its text is read.
    return driver.execute_script(
        "var c = document.querySelector(arguments[0]); return c ? c.textContent : null;",
        f'tr[data-plugin="{plugin}"] td.{name}')


def count(driver, selector):
    return driver.execute_script("return document.querySelectorAll(arguments[0]).length;",
                                 selector)


def open_page(driver, url, fresh=True):
    if fresh:
        driver.get(url)
        driver.delete_all_cookies()  # a new visitor: not logged in
    driver.get(url)
    Browser.until(driver, lambda d: d.find_element("id", "live").text == "live")


@pytest_twisted.ensureDeferred
async def test_the_page_loads_and_shows_the_example_plugins(browser, daemon):
    def look(driver):
        open_page(driver, daemon.url)
        states = driver.execute_script(
            "var o = {}; document.querySelectorAll('#rows tr[data-plugin]').forEach("
            "function (r) { o[r.dataset.plugin] = r.dataset.state; }); return o;")
        return (states, cell(driver, "greeter", "version"), driver.title,
                count(driver, "#rows svg.chart"))

    states, version, title, charts = await browser.run(look)
    assert states == {"greeter": "running", "reporter": "running", "archiver": "running"}
    assert version == "1.0" and title == "plugmgr" and charts == 3


@pytest_twisted.ensureDeferred
async def test_it_updates_when_a_plugin_is_reloaded_from_the_cli_without_a_page_reload(
        browser, daemon):
    def prepare(driver):
        open_page(driver, daemon.url)
        driver.execute_script("window.plugmgrMarker = 42;")
        return int(cell(driver, "greeter", "reloads"))

    before = await browser.run(prepare)
    code, out, err = await daemon.cli("reload", "greeter")
    assert code == 0, err

    def updated(driver):
        browser.until(driver, lambda d: int(cell(d, "greeter", "reloads")) == before + 1)
        browser.until(driver, lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll("
            "'#events li[data-kind=\"plugin_reloaded\"]')).some("
            "function (li) { return li.textContent.indexOf('greeter') >= 0; });"))
        history = driver.find_element("id", "history").text
        return driver.execute_script("return window.plugmgrMarker;"), history

    marker, history = await browser.run(updated)
    assert marker == 42  # the same page: it was never reloaded
    assert "greeter" in history and "ok" in history


@pytest_twisted.ensureDeferred
async def test_a_reload_button_is_refused_without_the_token(browser, daemon):
    client = Client(daemon.url.rstrip("/"))
    before = (await client.get("/metrics")).text.count("plugmgr_reloads_total")

    def click(driver):
        open_page(driver, daemon.url)
        reloads = int(cell(driver, "greeter", "reloads"))
        page = driver.find_element("tag name", "html")
        # A live update may replace the row between finding its button and
        # clicking it: find and click again until the click lands.
        browser.until(driver, lambda d: d.find_element(
            "css selector", 'tr[data-plugin="greeter"] button.reload').click() or True)
        browser.until(driver, staleness_of(page))  # the answer is a new page
        kind, text = browser.until(driver, lambda d: d.execute_script(
            "var m = document.getElementById('message');"
            " return m ? [m.getAttribute('class'), m.textContent] : null;"))
        return reloads, kind, text, int(cell(driver, "greeter", "reloads"))

    reloads, kind, text, after = await browser.run(click)
    assert kind == "error" and "log in with the token first" in text
    assert after == reloads
    assert (await client.get("/metrics")).text.count("plugmgr_reloads_total") == before


@pytest_twisted.ensureDeferred
async def test_a_reload_button_works_with_the_token_and_the_stream_shows_it(browser, daemon):
    def login(driver, token):
        open_page(driver, daemon.url)
        driver.find_element("css selector", '#login input[name="token"]').send_keys(token)
        driver.find_element("css selector", "#login button").click()
        return browser.until(driver, lambda d: d.find_element("id", "message")).text

    assert "wrong token" in await browser.run(login, "not-the-token")
    assert await browser.run(login, TOKEN) == "logged in"

    def click(driver):
        browser.until(driver, lambda d: d.find_element("id", "live").text == "live")
        reloads = int(cell(driver, "greeter", "reloads"))
        seen = count(driver, '#events li[data-kind="plugin_reloaded"]')
        shown = driver.find_element("id", "message")  # "logged in"
        browser.until(driver, lambda d: d.find_element(  # again if a live update replaced it
            "css selector", 'tr[data-plugin="greeter"] button.reload').click() or True)
        browser.until(driver, staleness_of(shown))  # the next page
        text = browser.until(driver, lambda d: d.find_element("id", "message")).text
        browser.until(driver, lambda d: d.find_element("id", "live").text == "live")
        return reloads, seen, text, int(cell(driver, "greeter", "reloads")), \
            count(driver, '#events li[data-kind="plugin_reloaded"]')

    reloads, seen, text, after, listed = await browser.run(click)
    assert text == "reloaded greeter (version 1.0)"
    assert after == reloads + 1
    assert listed == seen + 1  # the event list shows the reload


@pytest.mark.skipif(not os.environ.get("PLUGMGR_SCREENSHOTS"),
                    reason="set PLUGMGR_SCREENSHOTS=1 to save docs/dashboard.png")
@pytest_twisted.ensureDeferred
async def test_screenshot(browser, daemon):
    client = Client(daemon.url.rstrip("/"))
    await daemon.cli("reload", "reporter")
    for _ in range(20):
        await daemon.cli("call", "greeter", "greet", "alice")
    broken = daemon.home / "plugins" / "archiver.py"
    good = broken.read_text()
    broken.write_text(good.replace('version = "1.0"', 'version = "1.1"\n    oops('))
    await daemon.cli("reload", "archiver")  # fails: "file broken" shows why
    broken.write_text(good)
    await deferLater(reactor, 7, lambda: None)  # a few samples for the charts
    path = os.path.join(REPO, "docs", "dashboard.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def shoot(driver):
        open_page(driver, daemon.url, fresh=False)
        driver.save_screenshot(path)

    await browser.run(shoot)
    assert (await client.get("/")).code == 200
    assert os.path.getsize(path) > 10000


@pytest_twisted.ensureDeferred
async def test_off_loopback_the_page_is_the_login_form_until_logged_in_then_live(
        browser, tmp_path):
    home = tmp_path / "exposed"
    home.mkdir()
    make_home(home)
    shutil.rmtree(home / "plugins")
    shutil.copytree(os.path.join(REPO, "examples", "plugins"), home / "plugins")
    write_config(home, CONFIG.replace("interface=127.0.0.1", "interface=0.0.0.0"))
    d = Daemon(home, "--config", str(home / "plugmgr.toml"))
    try:
        await d.ready()
        await d.proto.wait_for("web: dashboard and /metrics on http://")
        url = re.search(r"web: dashboard and /metrics on (http://\S+/)", d.proto.text).group(1)
        url = url.replace("0.0.0.0", "127.0.0.1")

        def before_login(driver):
            driver.get(url)
            driver.delete_all_cookies()
            driver.get(url)
            browser.until(driver, lambda d: d.find_element("id", "private"))
            return (count(driver, "#rows"), count(driver, "#events"),
                    count(driver, "#login input[name=token]"))

        assert await browser.run(before_login) == (0, 0, 1)

        def log_in(driver):
            driver.find_element("css selector", '#login input[name="token"]').send_keys(TOKEN)
            driver.find_element("css selector", "#login button").click()
            browser.until(driver, lambda d: d.find_element("id", "live").text == "live")
            return int(cell(driver, "greeter", "reloads"))

        reloads = await browser.run(log_in)
        code, out, err = await d.cli("reload", "greeter")
        assert code == 0, err

        def updated(driver):
            browser.until(driver, lambda d: int(cell(d, "greeter", "reloads")) == reloads + 1)
            return True

        assert await browser.run(updated)  # the stream (with the cookie) keeps it live
    finally:
        if d.transport is not None and not d.proto.ended.called:
            d.signal("TERM")
            await d.ended()
