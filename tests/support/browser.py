"""A real headless Chromium for tests: Debian's browser and driver, driven by selenium.

The browser and its driver are the system's (``scripts/test`` installs Debian's ``chromium``
and ``chromium-driver``); selenium is told both paths, so Selenium Manager never tries to
download a browser of its own. A test that needs Chromium fails, never skips, when it is
missing: a skipped security test looks like a passed one.
"""

from __future__ import annotations

import os
import re
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support.http_server import LoopbackServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DESKTOP = (1280, 900)
PHONE = (390, 844)
# Page loads and scripts on loopback take milliseconds; this only bounds a hung browser.
PAGE_LOAD_SECONDS = 20


def missing_binaries() -> list[str]:
    """Return the browser files that are not there (or not executable)."""
    return [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


class Browser:
    """One headless Chromium window, with a screenshot helper that files under the test's
    own folder."""

    def __init__(self, folder: Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        # --no-sandbox: tests run as root, where Chromium's sandbox refuses to start.
        # --disable-dev-shm-usage: containers give /dev/shm a few MB, too little for a tab.
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        self.driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        self.driver.set_page_load_timeout(PAGE_LOAD_SECONDS)
        self.driver.set_script_timeout(PAGE_LOAD_SECONDS)
        self.folder = folder
        self._shots = 0

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self) -> str:
        """Return what a person reads on the page."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    def wait_for_text(self, text: str, timeout: float = 10.0) -> bool:
        """Wait until ``text`` shows on the page; return whether it did."""
        from selenium.common.exceptions import (
            NoSuchElementException,
            StaleElementReferenceException,
            TimeoutException,
        )
        from selenium.webdriver.support.ui import WebDriverWait

        # A page that is navigating away has no body, or a stale one, for a moment.
        settling = (NoSuchElementException, StaleElementReferenceException)
        try:
            WebDriverWait(
                self.driver, timeout, poll_frequency=0.05, ignored_exceptions=settling
            ).until(lambda _driver: text in self.text())
        except TimeoutException:
            return False
        return True

    def desktop(self) -> None:
        self.driver.set_window_size(*DESKTOP)

    def phone(self) -> None:
        """Resize to a phone's screen (390x844 CSS pixels, a common handset)."""
        self.driver.set_window_size(*PHONE)

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the current page under the test's folder and return its path."""
        self._shots += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "page"
        path = self.folder / f"{self._shots:02d}-{safe}.png"
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.driver.save_screenshot(str(path)):
            raise AssertionError(f"Chromium could not save a screenshot to {path}")
        return path

    def close(self) -> None:
        self.driver.quit()


def start_browser(folder: Path) -> Browser:
    """Start a headless Chromium, or fail the test saying what to install."""
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"this test drives a real Chromium, and {' and '.join(missing)} is missing:"
            " run scripts/test as root (it installs them) or"
            " `sudo apt-get install chromium chromium-driver`",
            pytrace=False,
        )
    return Browser(folder)


class PageServer:
    """Serve fixed HTML pages on a loopback port of their own: another origin than the one
    under test, as a web page shown on a cabinet would be."""

    def __init__(self, pages: dict[str, str]):
        served = pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's naming
                page = served.get(self.path.split("?", 1)[0])
                data = (page if page is not None else "no such page").encode()
                self.send_response(200 if page is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = LoopbackServer(Handler, name="pages")
        self.port = self._server.port

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self._server.close()
