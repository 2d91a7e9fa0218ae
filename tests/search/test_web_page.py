"""The web page in headless Chromium (Debian chromium + chromium-driver, never a downloaded
browser): enter the token, upload a spec, watch the study progress, stop it, resume it with the
button and see the trial count grow."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.search.test_service_support import TOKEN, Service, spec_yaml

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT_DIR = os.environ.get("EDGETUNE_SCREENSHOTS")  # set it to look at the page yourself


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(
            "Debian chromium and chromium-driver are not installed (make test installs them)"
        )
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="edgetune-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(what: str, ok: Callable[[], Any], timeout_s: float = 600) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = ok()
            if last:
                return last
        except Exception as exc:  # the table is redrawn every 2 s: an element may go stale
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"page: {what} not seen in {timeout_s} s (last: {last!r})")


def test_upload_watch_stop_resume_in_the_browser(
    browser: Any, tmp_path: Path, edgetune_home: Path
) -> None:
    from selenium.webdriver.common.by import By

    service = Service(tmp_path).start()
    try:
        browser.get(service.url + "/")
        css = lambda sel: browser.find_element(By.CSS_SELECTOR, sel)  # noqa: E731
        # the page asks for the token once, then keeps it
        wait("the token form", lambda: css("#token-form").is_displayed())
        css("#token").send_keys(TOKEN)
        css("#save-token").click()
        wait("the studies table", lambda: css("#main").is_displayed())
        browser.refresh()
        wait("the table without asking again", lambda: css("#main").is_displayed(), 20)
        assert not css("#token-form").is_displayed()

        spec = tmp_path / "web.yaml"
        spec.write_text(spec_yaml("web", trials=8))
        css("#spec-file").send_keys(str(spec))
        css("#submit").click()
        row = 'tr[data-study="web"]'
        wait("the study's row", lambda: browser.find_elements(By.CSS_SELECTOR, row), 30)
        assert css("#upload-error").text == ""

        def done() -> int:
            return int(css(f"{row} .done").text)

        def state() -> str:
            return str(css(row).get_attribute("data-state"))

        wait("a finished trial", lambda: done() >= 1 and state() == "running")
        wait(
            "a point on the plot",
            lambda: browser.find_elements(By.CSS_SELECTOR, "#plot circle.point"),
            60,
        )
        if SCREENSHOT_DIR:
            browser.save_screenshot(str(Path(SCREENSHOT_DIR) / "edgetune-running.png"))
        css(f"{row} button.stop").click()
        wait("the stopped state", lambda: state() == "stopped", 120)
        stopped_at = done()
        assert stopped_at < 8
        assert css(f"{row} button.stop").get_attribute("disabled") is not None

        css(f"{row} button.resume").click()
        wait("the running state again", lambda: state() == "running", 30)
        wait("the trial count growing", lambda: done() > stopped_at)
        assert service.detail("web")["run"]["op"] == "resume"
        if SCREENSHOT_DIR:
            browser.save_screenshot(str(Path(SCREENSHOT_DIR) / "edgetune-resumed.png"))
        css(f"{row} button.stop").click()  # no need to finish it
        wait("the stopped state", lambda: state() == "stopped", 120)
    finally:
        service.stop()
