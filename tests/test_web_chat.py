"""The web chat page end to end in headless Chromium (selenium + Debian's chromium/chromium-driver).

The browser is the one optional piece (a system package, not a Python dependency): without Chromium and
chromedriver the tests skip, unless HERD_REQUIRE_BROWSER=1 (CI sets it), then they fail. selenium is in
the [test] extra and imported like any dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from serve_helpers import MODEL_NAME, running_server, shared_model, wait_for

REQUIRE = os.environ.get("HERD_REQUIRE_BROWSER") == "1"


def _missing(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"HERD_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


class RecordChatBodies:
    """ASGI middleware keeping the JSON body of every chat request (what the page really sent)."""

    def __init__(self, app, sink: list) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/chat/completions":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def recording_receive():
            message = await receive()
            if message["type"] == "http.request":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.sink.append(json.loads(b"".join(parts) or b"null"))
            return message

        await self.app(scope, recording_receive, send)


@pytest.fixture(scope="module")
def driver():
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    chromedriver = shutil.which("chromedriver")
    if browser is None or chromedriver is None:
        _missing("Chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="herd-chromium-")
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1200,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    bodies: list = []
    with running_server(shared_model(), kv_cache_bytes=128 << 20,
                        configure_app=lambda app: app.add_middleware(RecordChatBodies, sink=bodies)) as srv:
        srv.bodies = bodies
        yield srv


WATCH_JS = """
window.__seen = [];
const box = document.getElementById('messages');
new MutationObserver(() => {
  const replies = box.querySelectorAll('.msg.assistant .content');
  const last = replies[replies.length - 1];
  if (last) window.__seen.push([last.textContent.length, document.getElementById('send').disabled,
                               document.body.dataset.streaming]);
}).observe(box, {subtree: true, childList: true, characterData: true});
"""


def _set(drv, element_id: str, value: str) -> None:
    el = drv.find_element("id", element_id)
    el.clear()
    el.send_keys(value)


def _send_and_wait(drv, text: str, timeout: float = 60) -> str:
    n = len(drv.find_elements("css selector", ".msg.assistant"))
    _set(drv, "input", text)
    drv.find_element("id", "send").click()
    wait_for(lambda: len(drv.find_elements("css selector", ".msg.assistant")) > n
             and drv.execute_script("return document.body.dataset.streaming") == "false", timeout)
    return drv.find_elements("css selector", ".msg.assistant .content")[-1].text


def test_chat_page_streams_keeps_history_and_resets(server, driver):
    driver.get(server.base_url + "/")
    wait_for(lambda: driver.find_element("id", "model-name").text == MODEL_NAME, 15)
    driver.find_element("id", "settings").click()  # open the settings panel
    _set(driver, "temperature", "0")
    _set(driver, "max-tokens", "24")
    driver.execute_script(WATCH_JS)

    # Turn 1: a reply streams in while the send button is disabled
    first = _send_and_wait(driver, "What is the capital of France?")
    assert first.strip()
    seen = driver.execute_script("return window.__seen")
    growing = sorted({length for length, disabled, streaming in seen if length > 0 and streaming == "true"})
    assert len(growing) >= 2, seen  # the text grew in several steps: streamed, not one response
    assert all(disabled for length, disabled, streaming in seen if streaming == "true")
    assert driver.find_element("id", "send").is_enabled()
    req = server.bodies[-1]
    assert req["stream"] is True and req["model"] == MODEL_NAME
    assert req["messages"] == [{"role": "user", "content": "What is the capital of France?"}]

    # Turn 2: the whole conversation is sent
    second = _send_and_wait(driver, "And of Germany?")
    assert second.strip()
    msgs = server.bodies[-1]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == first  # what the page showed is what it sends back
    assert msgs[2]["content"] == "And of Germany?"
    assert len(driver.find_elements("css selector", ".msg.user")) == 2
    assert len(driver.find_elements("css selector", ".msg.assistant")) == 2

    # Reset clears the view and the history; a system prompt is sent with the next turn
    driver.find_element("id", "reset").click()
    assert driver.find_elements("css selector", ".msg") == []
    assert driver.execute_script("return window.herdChat.history.length") == 0
    _set(driver, "system", "Answer in one word.")
    _set(driver, "max-tokens", "4")
    _send_and_wait(driver, "Hi")
    assert server.bodies[-1]["messages"] == [{"role": "system", "content": "Answer in one word."},
                                             {"role": "user", "content": "Hi"}]
    server.wait_idle()


def test_chat_page_shows_errors(server, driver):
    driver.get(server.base_url + "/")
    wait_for(lambda: driver.find_element("id", "model-name").text == MODEL_NAME, 15)
    driver.find_element("id", "settings").click()
    _set(driver, "max-tokens", "-3")
    _set(driver, "input", "hello")
    driver.find_element("id", "send").click()
    error = driver.find_element("id", "error")
    wait_for(lambda: error.is_displayed() and "max_tokens" in error.text, 15)
    assert "400" in error.text
    # the failed turn is taken back so it can be resent
    wait_for(lambda: driver.execute_script("return document.body.dataset.streaming") == "false", 10)
    assert driver.find_elements("css selector", ".msg") == []
    assert driver.find_element("id", "input").get_attribute("value") == "hello"
    assert driver.find_element("id", "send").is_enabled()
