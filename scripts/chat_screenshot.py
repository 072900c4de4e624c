#!/usr/bin/env python3
"""Screenshot of the chat page answering one question with the real demo pair, for the docs.

Starts `nudging serve` (demo-base + demo-nudger unless --base/--nudger are given) on a free loopback port, asks
one question in headless Chromium, waits for the answer's stats line and saves a PNG; the server is stopped at
the end. Needs Chromium, its driver and selenium:

    apt-get install -y chromium chromium-driver && pip install selenium
    python scripts/chat_screenshot.py                # writes docs/chat-page.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def browser(width: int, height: int):
    from selenium import webdriver

    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("needs chromium and chromedriver (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    # the viewport itself, not the window (whose size includes the browser's frame)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    return driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", default="Is a tomato a fruit or a vegetable?")
    parser.add_argument("--out", default=str(ROOT / "docs" / "chat-page.png"))
    parser.add_argument("--base", default=None, help="base model spec (default: the demo base)")
    parser.add_argument("--nudger", default=None, help="nudger model spec (default: the demo nudger)")
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--height", type=int, default=700)
    parser.add_argument("--load-wait", type=float, default=600, help="seconds to wait for the models to load")
    parser.add_argument("--answer-wait", type=float, default=300, help="seconds to wait for the answer")
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    from servers import start_server

    process, url = start_server(args.base, args.nudger, wait_s=args.load_wait)
    print(f"server up at {url} after {time.monotonic() - started:.0f} s", file=sys.stderr)
    driver = None
    try:
        driver = browser(args.width, args.height)
        driver.get(url + "/")
        driver.find_element(By.ID, "question").send_keys(args.question)
        driver.find_element(By.ID, "send").click()
        asked = time.monotonic()
        turn = WebDriverWait(driver, args.answer_wait, poll_frequency=0.5).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#log .assistant .stats, #log .assistant .error")
            and d.find_element(By.ID, "send").is_enabled() and d.find_element(By.CSS_SELECTOR, "#log .assistant"),
            f"no answer within {args.answer_wait:.0f} s")
        errors = turn.find_elements(By.CSS_SELECTOR, ".error")
        if errors:
            raise SystemExit(f"the page shows an error: {errors[0].text}")
        print(f"answered in {time.monotonic() - asked:.0f} s: {turn.find_element(By.CSS_SELECTOR, '.stats').text}",
              file=sys.stderr)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)) or out.stat().st_size == 0:
            raise SystemExit(f"could not write {out}")
        print(out)
    finally:
        if driver is not None:
            driver.quit()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
