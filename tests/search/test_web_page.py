"""The web page in headless Chromium (Debian chromium + chromium-driver, never a downloaded
browser): enter the token, open optuna-dashboard through its login, upload a spec, watch the
study progress, see a second study wait as queued and take it out of the queue, stop the first,
resume it with the button and see the trial count grow, then download its export and see the
export's figures."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.search.test_service_security import Secured
from tests.search.test_service_support import TOKEN, spec_yaml

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("needs_fashion_mnist")]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT_DIR = os.environ.get("EDGETUNE_SCREENSHOTS")  # set it to look at the page yourself
# more trials than the test can ever see finish: trials ruled out by the cost model take
# well under a second, so a short study could end before the Stop button is pressed
TRIALS = 200


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
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = ok()
            if last:
                return last
        except WebDriverException as exc:  # the table is redrawn every 2 s: an element may go stale
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"page: {what} not seen in {timeout_s} s (last: {last!r})")


def test_upload_watch_stop_resume_in_the_browser(
    browser: Any, tmp_path: Path, edgetune_home: Path
) -> None:
    from selenium.webdriver.common.by import By

    service = Secured(tmp_path, "--max-runs", "1").start()
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

        # the dashboard link logs in on the dashboard's port: an HttpOnly cookie, not readable
        wait("the dashboard link", lambda: css("#dashboard-link").is_displayed(), 20)
        css("#dashboard-link").click()
        wait("a second tab", lambda: len(browser.window_handles) == 2, 30)
        page = browser.current_window_handle
        browser.switch_to.window(next(h for h in browser.window_handles if h != page))
        wait("optuna-dashboard", lambda: "/dashboard" in browser.current_url, 60)
        assert f":{service.dashboard_port}/" in browser.current_url
        wait("its page", lambda: "Optuna" in browser.title, 60)
        assert TOKEN not in browser.execute_script("return document.cookie")
        browser.close()
        browser.switch_to.window(page)
        assert TOKEN not in browser.execute_script("return document.cookie")

        spec = tmp_path / "web.yaml"
        spec.write_text(spec_yaml("web", trials=TRIALS))
        css("#spec-file").send_keys(str(spec))
        css("#submit").click()
        row = 'tr[data-study="web"]'
        wait("the study's row", lambda: browser.find_elements(By.CSS_SELECTOR, row), 30)
        assert css("#upload-error").text == ""

        def done() -> int:
            return int(css(f"{row} .done").text)

        def state() -> str:
            now = str(css(row).get_attribute("data-state"))
            if now == "failed":  # say why at once, not after the wait's timeout
                raise AssertionError(f"study web failed: {service.detail('web')}")
            return now

        wait("a finished trial", lambda: done() >= 1 and state() == "running")
        wait(
            "a point on the plot",
            lambda: browser.find_elements(By.CSS_SELECTOR, "#plot circle.point"),
            60,
        )
        # a second study waits for the run slot; Stop takes it out of the queue
        assert service.submit("web-queued", trials=1).json()["state"] == "queued"
        queued = 'tr[data-study="web-queued"]'
        wait("the queued row", lambda: css(queued).get_attribute("data-state") == "queued", 30)
        assert css(f"{queued} .state").text.startswith("queued")
        assert "queued" in css("#status").text
        if SCREENSHOT_DIR:
            browser.save_screenshot(str(Path(SCREENSHOT_DIR) / "edgetune-running.png"))
        css(f"{queued} button.stop").click()
        wait("the dequeued row", lambda: css(queued).get_attribute("data-state") == "stopped", 30)
        assert state() == "running"
        css(f"{row} button.stop").click()
        wait("the stopped state", lambda: state() == "stopped", 120)
        stopped_at = done()
        assert stopped_at < TRIALS
        assert css(f"{row} button.stop").get_attribute("disabled") is not None

        css(f"{row} button.resume").click()
        wait("the running state again", lambda: state() == "running", 30)
        wait("the trial count growing", lambda: done() > stopped_at)
        assert service.detail("web")["run"]["op"] == "resume"
        if SCREENSHOT_DIR:
            browser.save_screenshot(str(Path(SCREENSHOT_DIR) / "edgetune-resumed.png"))
        css(f"{row} button.stop").click()  # no need to finish it
        wait("the stopped state", lambda: state() == "stopped", 120)

        # Download exports the best feasible trial; the page then shows the export's figures
        wait("a trial to download", lambda: css(f"{row} button.download").is_enabled(), 600)
        css(f"{row} button.download").click()
        wait("the export's figures", lambda: css("#figures").is_displayed(), 600)
        assert css("#figures-name").text == "web" and css("#action-error").text == ""
        for figure in ("front", "policy"):
            shown = browser.execute_script(
                f"return document.getElementById('{figure}-figure').naturalWidth"
            )
            assert shown > 500, f"{figure}.png is not shown"
        if SCREENSHOT_DIR:
            browser.save_screenshot(str(Path(SCREENSHOT_DIR) / "edgetune-figures.png"))
    finally:
        service.stop()
