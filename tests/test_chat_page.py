"""The chat page at `/` driven in a real headless Chromium against a real `nudging serve` process (tiny models).

Needs Chromium, its driver and selenium; CI installs them with:
    apt-get install -y chromium chromium-driver
    pip install selenium
The module is skipped when any of them is missing. With NUDGING_SCREENSHOT=PATH the answered page is also
saved to PATH (scripts/chat_screenshot.py makes the docs picture with the real demo models).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from servers import start_server


def _find(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


CHROMIUM = _find("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVER = _find("chromedriver", "chromium-driver")

if CHROMIUM is None or DRIVER is None:
    pytest.skip("headless browser not installed (apt-get install -y chromium chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

QUESTION = "The dog sees"  # the tiny pair answers it with both nudger and base words
ANSWER_WAIT_S = 60
STATS = re.compile(r"nudger wrote (\d+)/(\d+) words")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=900,700"):
        options.add_argument(flag)
    # an explicit driver path: selenium's own driver manager (which downloads) is never used
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except Exception:
        process.kill()
        process.wait(timeout=30)


def ask(browser, question: str, key: str | None = None):
    """Type a question (and the API key) and send it; returns the new assistant turn once it has stats or an error."""
    before = len(browser.find_elements(By.CSS_SELECTOR, "#log .assistant"))
    if key is not None:
        field = browser.find_element(By.ID, "key")
        field.clear()
        field.send_keys(key)
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "send").click()

    def finished(driver):
        turns = driver.find_elements(By.CSS_SELECTOR, "#log .assistant")
        if len(turns) <= before:
            return False
        last = turns[-1]
        done = last.find_elements(By.CSS_SELECTOR, ".stats, .error")
        # the send button is enabled again once the page has finished with the answer
        return last if done and driver.find_element(By.ID, "send").is_enabled() else False

    return WebDriverWait(browser, ANSWER_WAIT_S, poll_frequency=0.2).until(
        finished, f"no stats or error line within {ANSWER_WAIT_S} s")


def answer_text(browser, turn) -> str:
    """The assistant's words exactly as the page holds them (the first child; stats/error lines follow it)."""
    return browser.execute_script("return arguments[0].firstElementChild.textContent;", turn)


def nudger_text(browser, turn) -> list[str]:
    return browser.execute_script(
        "return Array.from(arguments[0].querySelectorAll('span.nudger'), s => s.textContent);", turn)


def base_text(browser, turn) -> list[str]:
    """The answer's text outside the highlighted spans (the base's words and the spaces around nudged words)."""
    return browser.execute_script(
        "return Array.from(arguments[0].firstElementChild.childNodes).filter(n => n.nodeType === Node.TEXT_NODE)"
        ".map(n => n.textContent);", turn)


def no_space(text: str) -> str:
    return "".join(text.split())


def api_chat(url: str, messages: list[dict], key: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.post(url + "/v1/chat/completions", headers=headers, timeout=120,
                          json={"messages": messages, "max_tokens": 256, "gamma": 0.3})
    assert response.status_code == 200, response.text
    return response.json()


def screenshot(browser, tmp_path: Path, name: str, docs: bool = False) -> Path:
    """A PNG of the page in tmp_path; with docs and NUDGING_SCREENSHOT=PATH, copied to PATH too."""
    path = tmp_path / name
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 0 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wanted = os.environ.get("NUDGING_SCREENSHOT")
    if docs and wanted:
        Path(wanted).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, wanted)
    return path


def test_page_streams_an_answer_with_nudger_words_and_matches_the_api(tiny_folders, browser, tmp_path):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"])
    try:
        browser.get(url + "/")
        assert browser.find_element(By.ID, "max_tokens").get_attribute("value") == "256"
        assert browser.find_element(By.ID, "gamma").get_attribute("value") == "0.3"
        turn = ask(browser, QUESTION)
        assert not turn.find_elements(By.CSS_SELECTOR, ".error"), turn.text

        users = browser.find_elements(By.CSS_SELECTOR, "#log .turn.user")
        assistants = browser.find_elements(By.CSS_SELECTOR, "#log .turn.assistant")
        assert [u.text for u in users] == [QUESTION] and len(assistants) == 1

        text = answer_text(browser, turn)
        assert text.strip()
        nudged = nudger_text(browser, turn)
        assert nudged, "no span with class nudger"
        first = browser.execute_script(
            "const c = Array.from(arguments[0].firstElementChild.childNodes).find(n => n.textContent.trim());"
            "return c.nodeType === Node.ELEMENT_NODE ? c.className : 'text';", turn)
        assert first == "nudger"  # the tiny nudger always writes the first word

        stats = turn.find_element(By.CSS_SELECTOR, ".stats").text
        match = STATS.search(stats)
        assert match, stats
        nudged_words, total_words = map(int, match.groups())
        assert 1 <= nudged_words <= total_words

        # the same conversation through the API, not streamed: greedy, so the very same words and sources
        reply = api_chat(url, [{"role": "user", "content": QUESTION}])
        assert reply["choices"][0]["message"]["content"] == text
        spans = reply["nudging"]["spans"]
        # highlighted: the nudger's words without the spaces around them
        assert no_space("".join(s["text"] for s in spans if s["source"] == "nudger")) == no_space("".join(nudged))
        assert all(word == word.strip() and word for word in nudged)
        assert no_space("".join(s["text"] for s in spans if s["source"] == "base")) == \
            no_space("".join(base_text(browser, turn)))
        assert "".join(base_text(browser, turn)).strip(), "the base wrote nothing: the highlighting shows no contrast"
        assert (reply["nudging"]["stats"]["nudged_words"], reply["nudging"]["stats"]["total_words"]) == \
            (nudged_words, total_words)

        # a second turn sends the whole conversation, the first answer included
        follow_up = "And the dog?"
        second = ask(browser, follow_up)
        assert not second.find_elements(By.CSS_SELECTOR, ".error"), second.text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#log .turn.assistant")) == 2
        conversation = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": text},
                        {"role": "user", "content": follow_up}]
        assert api_chat(url, conversation)["choices"][0]["message"]["content"] == answer_text(browser, second)

        screenshot(browser, tmp_path, "chat-page.png", docs=True)
    finally:
        stop(process)


def test_page_with_an_api_key(tiny_folders, browser, tmp_path):
    process, url = start_server(tiny_folders["base"], tiny_folders["nudger"], "--api-key", "k")
    try:
        browser.get(url + "/")
        refused = ask(browser, QUESTION)
        error = refused.find_element(By.CSS_SELECTOR, ".error").text
        assert "API key" in error, error
        assert not refused.find_elements(By.CSS_SELECTOR, ".stats")
        assert browser.find_element(By.ID, "question").get_attribute("value") == ""

        turn = ask(browser, QUESTION, key="k")
        assert not turn.find_elements(By.CSS_SELECTOR, ".error"), turn.text
        assert STATS.search(turn.find_element(By.CSS_SELECTOR, ".stats").text)
        text = answer_text(browser, turn)
        assert text.strip() and nudger_text(browser, turn)
        # the refused question was taken back, so the page's conversation is the one question, as for the API
        assert api_chat(url, [{"role": "user", "content": QUESTION}], key="k")["choices"][0]["message"]["content"] \
            == text
        screenshot(browser, tmp_path, "chat-page-key.png")
    finally:
        stop(process)
