"""The browser tests' Chromium. A module that uses ``browser`` defines ``parts``: what it runs
beside the test stack (started before Chromium, so that the sample chain's interfaces do not
appear under a loaded page)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from clover.config import Config
from stack.launcher import Launcher
from tests.integration.controller_parts import flush_visibility

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(parts: Launcher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed (make setup installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2400",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def flushed_store(parts: Launcher, cfg: Config) -> Iterator[redis.Redis]:
    """Redis for a module that publishes visibility figures of its own: they are removed after it."""
    client = redis.Redis.from_url(cfg.redis_url, decode_responses=True)
    yield client
    flush_visibility(client)
    client.close()
