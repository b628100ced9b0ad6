"""Reading and driving the dashboard in headless Chromium (the browser tests' shared helpers; the
``browser`` fixture is in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from clover.config import Config
from tests.waiting import wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def text(driver: WebDriver, element_id: str) -> str:
    try:
        return str(driver.find_element(By.ID, element_id).text)
    except WebDriverException:
        return ""


def trace(driver: WebDriver, graph_id: str, index: int = 0) -> dict[str, Any] | None:
    """The plotted data of a trace of a dcc.Graph (None until drawn)."""
    found = driver.execute_script(
        "const p = document.querySelector(`#${arguments[0]} .js-plotly-plot`);"
        "return p && p.data && p.data.length > arguments[1] ? JSON.parse(JSON.stringify(p.data[arguments[1]])) : null;",
        graph_id,
        index,
    )
    return found if isinstance(found, dict) else None


def cells(driver: WebDriver, table_id: str) -> list[list[str]]:
    """The body cells of a table (views.table), row by row, as shown."""
    found = driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} tbody tr`)]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()));",
        table_id,
    )
    return found if isinstance(found, list) else []


DASH_LOADING = "Loading..."


def open_page(driver: WebDriver, url: str, ready: Callable[[], object], what: str) -> None:
    """Load ``url`` until ``ready()`` holds. A page whose scripts failed to load (blank, or Dash's
    "Loading..." that its scripts replace) is loaded again: Chromium aborts requests in flight
    when interfaces appear (the sample chain's veths, as root), net::ERR_NETWORK_CHANGED."""
    for attempt in range(3):
        driver.get(url)
        try:
            wait_until(ready, 45, what=what)
            return
        except AssertionError as exc:
            page = driver.find_element(By.TAG_NAME, "body").text[:300]
            log = [entry["message"][:200] for entry in driver.get_log("browser")[-3:]]
            if attempt == 2 or page not in ("", DASH_LOADING):
                raise AssertionError(f"{exc}; the page shows: {page!r}; browser log: {log}") from None


def log_in(driver: WebDriver, cfg: Config) -> None:
    """Enter the controller's API token at the top of the loaded dashboard, as a person does
    (``cloverctl local token``); the test stack has one, as a default install does."""
    if not cfg.api_token:
        return
    for attempt in (1, 2):
        field = wait_until(lambda: next(iter(driver.find_elements(By.ID, "token-input")), None), 20,
                           what="the token field")  # fmt: skip
        field.clear()
        field.send_keys(cfg.api_token + Keys.ENTER)
        if attempt == 2:
            wait_until(lambda: text(driver, "token-state") == "token accepted", 60,
                       what="the dashboard to accept the token typed again")  # fmt: skip
            return
        checked = wait_until(lambda: (t := text(driver, "token-state")) not in ("", "not logged in") and t, 60,
                             what="the dashboard to check the token")  # fmt: skip
        if checked == "token accepted":
            return
        # Seen once in a fresh-clone CI run, on the page's first load: the field took only part of
        # what was typed ("wrong token"). A person types it again; a second refusal fails the test.


def open_tab(driver: WebDriver, label: str) -> None:
    """Click the dashboard tab named ``label``."""
    tab = wait_until(lambda: next((t for t in driver.find_elements(By.CSS_SELECTOR, ".tab") if t.text == label), None),
                     20, what=f"the {label} tab")  # fmt: skip
    tab.click()


def checkbox(driver: WebDriver, checklist: str, value: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, f'#{checklist} input[value="{value}"]')


def click_option(driver: WebDriver, checklist: str, value: str) -> None:
    box = checkbox(driver, checklist, value)
    driver.execute_script("arguments[0].closest('label').click()", box)


def screenshot(driver: WebDriver, name: str) -> None:
    """Save what the page shows as ``artifacts/<name>.png``."""
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
