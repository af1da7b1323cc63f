"""A real headless browser for page tests: Debian's chromium and chromedriver (`make browser` installs them),
driven by Selenium. No browser is downloaded at run time."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextlib.contextmanager
def headless_chromium(width: int = 1600, height: int = 1000, *, offline: bool = False) -> Iterator:
    """A Selenium driver on Debian's headless chromium; fails with the fix when the packages are missing.

    ``offline``: every host name but loopback fails to resolve, as on a machine without internet (a page that
    needs a CDN shows it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} missing: run `make browser` (apt: chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    if offline:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
