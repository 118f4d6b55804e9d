"""The dashboard in a real browser: headless Debian Chromium, driven by Selenium, against `datasette serve`.

It opens the dashboard and the ready-made queries' pages, checks that every panel drew its rows
(dashboard.js sets data-rows on a panel once drawn) on a canvas of some size, and that the console
stayed free of errors. Screenshots go to test-artifacts/ at the repository root.
"""
import asyncio
import pathlib

import pytest

from asgi_log_to_sqlite import create_file

from conftest import DATASETTE_MAJOR, ROOT, free_port, run, running_server
from framework_logs import framework_log, imported_log
from test_demo import demo  # noqa: F401 (a fixture: the demo, served as scripts/dev.py demo serves it)
from test_dashboard import FIREFOX, NOW_ROWS, OLD_ROWS, make_log, send_traffic, since_two_days_ago

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMEDRIVER = pathlib.Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "test-artifacts"
LINE = f"datasette-{DATASETTE_MAJOR}"
QUERY_PAGES = ("traffic_by_hour", "top_paths", "status_over_time", "slowest_routes", "last_requests")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver (the test command installs them)",
)


def chromium(user_data_dir):
    """Headless Chromium through its own chromedriver; both paths given, so Selenium Manager fetches nothing."""
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--disable-sync", "--disable-extensions", "--window-size=1400,1800",
                     f"--user-data-dir={user_data_dir}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`datasette serve` on a free loopback port, over a log written by the real middleware."""
    folder = tmp_path_factory.mktemp("browser")
    log = make_log(folder / "requests.db")
    empty = create_file(str(folder / "empty.db"))
    imported = imported_log(folder)
    frameworks = [framework_log(folder / f"{name}.db", name) for name in ("starlette", "django")]
    port = free_port()
    command = ["datasette", "serve", str(log), empty, imported, *frameworks, "-h", "127.0.0.1", "-p", str(port)]
    with running_server(command, port):
        yield f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name, folder=ARTIFACTS, whole_page=True):
    """The page as a PNG; ``whole_page`` makes the window as tall as the page first."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    size = driver.get_window_size()
    if whole_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], max(height + 140, 900))
    driver.save_screenshot(str(path))
    driver.set_window_size(size["width"], size["height"])
    return path


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def plotted(driver, canvas) -> int:
    """How many of the chart's points hold a value other than nothing or zero."""
    return driver.execute_script("""
        const chart = Chart.getChart(arguments[0]);
        return chart.data.datasets.reduce((n, d) => n + d.data.filter(v => v != null && Number(v) !== 0).length, 0);
    """, canvas)


def drawn_panels(driver, url):
    driver.get(url)
    WebDriverWait(driver, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-dashboard") in ("drawn", "failed"))
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-dashboard") == "drawn"
    return driver.find_elements(By.CSS_SELECTOR, "[data-panel]")


def assert_drew_its_rows(driver, panel) -> str:
    """The panel has no error and rows, and a chart's rows put points on its canvas; returns its name."""
    name = panel.get_attribute("data-panel")
    assert panel.get_attribute("data-error") is None, f"{name}: {panel.get_attribute('data-error')}"
    assert int(panel.get_attribute("data-rows")) > 0, f"{name} drew no rows"
    if panel.get_attribute("data-kind") == "chart":
        assert plotted(driver, panel.find_element(By.TAG_NAME, "canvas")) > 0, f"{name}: its rows put no point on the chart"
    return name


def test_every_panel_draws_its_rows_with_no_console_errors(served, browser):
    served, _ = served
    panels = drawn_panels(browser, served + "/requests/-/dashboard")
    screenshot(browser, f"{LINE}-dashboard")
    assert len(panels) >= 12
    for panel in panels:
        name = assert_drew_its_rows(browser, panel)
        if panel.get_attribute("data-kind") == "chart":
            canvas = panel.find_element(By.TAG_NAME, "canvas")
            assert canvas.size["width"] > 100 and canvas.size["height"] > 100, name
        elif panel.get_attribute("data-kind") == "table":
            assert panel.find_elements(By.CSS_SELECTOR, "tbody tr"), name
        else:
            values = [e.text for e in panel.find_elements(By.CSS_SELECTOR, ".log-kpi-value")]
            assert len(values) == 6 and "…" not in values, values
        link = panel.find_element(By.CSS_SELECTOR, "h2 a").get_attribute("href")
        assert link.startswith(served + "/requests/") and "start=" in link, f"{name}: {link}"
    # Everything the page fetched, scripts and data alike, came from the server that sent it.
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert any(u.endswith("chart.umd.min.js") for u in fetched) and any("dashboard.json" in u for u in fetched)
    assert [u for u in fetched if not u.startswith(served + "/")] == []
    kpi = browser.find_element(By.CSS_SELECTOR, '[data-kpi="requests"] .log-kpi-value').text
    assert kpi.replace(",", "").isdigit() and int(kpi.replace(",", "")) > 0
    assert console_errors(browser) == []


def test_a_month_draws_its_charts_over_time_per_day(served, browser):
    served, _ = served
    drawn_panels(browser, served + "/requests/-/dashboard?range=30d")
    for name in ("traffic", "status_over_time", "latency_over_time"):
        panel = browser.find_element(By.CSS_SELECTOR, f'[data-panel="{name}"]')
        assert panel.get_attribute("data-error") is None and int(panel.get_attribute("data-rows")) > 0, name
        labels = browser.execute_script("return Chart.getChart(arguments[0]).data.labels",
                                        panel.find_element(By.TAG_NAME, "canvas"))
        assert 30 <= len(labels) <= 31, (name, len(labels))  # days, not 720 hours
    assert console_errors(browser) == []


def test_a_preset_and_a_bar_click_narrow_the_page(served, browser):
    served, _ = served
    drawn_panels(browser, served + "/requests/-/dashboard?range=24h")
    assert browser.find_element(By.CSS_SELECTOR, ".log-preset[aria-current]").text.replace(" ", "") == "24h"
    # Clicking the bar of /api/items filters the page by that path, shown as a removable chip.
    canvas = browser.find_element(By.CSS_SELECTOR, '[data-panel="top_paths"] canvas')
    browser.execute_script("""
        const chart = Chart.getChart(arguments[0]);
        const bar = chart.getDatasetMeta(0).data[chart.data.labels.indexOf(arguments[1])];
        const box = arguments[0].getBoundingClientRect();
        arguments[0].dispatchEvent(new MouseEvent('click', {clientX: box.left + bar.x - 2, clientY: box.top + bar.y, bubbles: true}));
    """, canvas, "/api/items")
    WebDriverWait(browser, 20).until(lambda d: "path_prefix=%2Fapi%2Fitems" in d.current_url)
    drawn_panels(browser, browser.current_url)
    chip = browser.find_element(By.CSS_SELECTOR, ".log-chip")
    assert "path starts with /api/items" in chip.text
    labels = browser.execute_script(
        "return Chart.getChart(arguments[0]).data.labels", browser.find_element(By.CSS_SELECTOR, '[data-panel="top_paths"] canvas'))
    assert sorted(labels) == ["/api/items", "/api/items/7"]
    screenshot(browser, f"{LINE}-dashboard-filtered")
    chip.find_element(By.TAG_NAME, "a").click()
    WebDriverWait(browser, 20).until(lambda d: "path_prefix" not in d.current_url)
    assert "range=24h" in browser.current_url and not browser.find_elements(By.CSS_SELECTOR, ".log-chip")
    assert console_errors(browser) == []


def test_a_click_on_a_traffic_bar_narrows_the_page_to_its_day(served, browser):
    url, _ = served
    drawn_panels(browser, url + "/requests/-/dashboard")
    day = browser.execute_script("""
        const canvas = arguments[0], chart = Chart.getChart(canvas);
        const people = chart.data.datasets[0].data, last = people.findLastIndex(value => value > 0);
        const bar = chart.getDatasetMeta(0).data[last], box = canvas.getBoundingClientRect();
        canvas.dispatchEvent(new MouseEvent('click', {clientX: box.left + bar.x, clientY: box.top + bar.y + 1, bubbles: true}));
        return new Date(Date.now()).toISOString().slice(0, 10);
    """, browser.find_element(By.CSS_SELECTOR, '[data-panel="traffic"] canvas'))
    WebDriverWait(browser, 20).until(lambda d: "start=" in d.current_url)
    assert f"start={day}&end={day}" in browser.current_url and "range=" not in browser.current_url
    drawn_panels(browser, browser.current_url)
    assert browser.find_element(By.CSS_SELECTOR, ".log-period-label strong").text == day
    assert console_errors(browser) == []


def test_live_shows_requests_logged_after_the_page_loaded(served, browser):
    url, log = served
    drawn_panels(browser, url + "/requests/-/dashboard")
    requests_kpi = '[data-kpi="requests"] .log-kpi-value'
    before = int(browser.find_element(By.CSS_SELECTOR, requests_kpi).text.replace(",", ""))
    browser.find_element(By.ID, "log-live").click()
    asyncio.run(send_traffic(log, [("/live/arrived", FIREFOX, None, 3)]))
    WebDriverWait(browser, 30).until(
        lambda d: "/live/arrived" in d.find_element(By.CSS_SELECTOR, '[data-panel="last_requests"]').text)
    WebDriverWait(browser, 30).until(
        lambda d: int(d.find_element(By.CSS_SELECTOR, requests_kpi).text.replace(",", "")) == before + 3)
    # Two more refreshes, each reading from the newest row shown on, must not show a row twice.
    loads = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-loads"))
    WebDriverWait(browser, 30).until(
        lambda d: int(d.find_element(By.TAG_NAME, "body").get_attribute("data-loads")) >= loads + 2)
    shown = browser.find_element(By.CSS_SELECTOR, '[data-panel="last_requests"]').text
    assert shown.count("/live/arrived") == 3
    screenshot(browser, f"{LINE}-dashboard-live")
    browser.find_element(By.ID, "log-live").click()
    assert console_errors(browser) == []


def test_a_log_with_no_traffic_says_how_to_make_some_instead_of_empty_axes(served, browser):
    url, _ = served
    drawn_panels(browser, url + "/empty/-/dashboard")
    message = browser.find_element(By.ID, "log-empty")
    # The command sends its traffic to the very server the page came from.
    assert message.is_displayed() and f"python -m asgi_log_to_sqlite.traffic {url} --requests" in message.text
    assert not any(panel.is_displayed() for panel in browser.find_elements(By.CSS_SELECTOR, "[data-panel]"))
    screenshot(browser, f"{LINE}-dashboard-empty")
    assert console_errors(browser) == []


def test_an_imported_nginx_log_draws_every_panel_but_the_latencies_it_has_none_of(served, browser):
    url, _ = served
    panels = drawn_panels(browser, url + "/nginx/-/dashboard")
    rows = {panel.get_attribute("data-panel"): int(panel.get_attribute("data-rows")) for panel in panels}
    # An access log carries no durations, so the latency panels have no rows to draw, and say so.
    assert {name for name, count in rows.items() if count == 0} == {"latency_over_time", "slowest_routes"}
    assert all(panel.get_attribute("data-error") is None for panel in panels)
    screenshot(browser, f"{LINE}-dashboard-imported")
    assert console_errors(browser) == []


def test_the_demo_s_dashboard_draws_its_traffic_once_signed_in(demo, browser):
    url, _, sign_in, _ = demo
    browser.get(url + "/requests/-/dashboard")
    assert "403" in browser.title or "Forbidden" in browser.page_source  # signed out, the log is refused
    assert ["403" in entry["message"] for entry in console_errors(browser)] == [True]  # that refusal, read off
    browser.get(sign_in)
    panels = drawn_panels(browser, url + "/requests/-/dashboard")
    for panel in panels:
        assert_drew_its_rows(browser, panel)
    screenshot(browser, f"{LINE}-demo-dashboard")
    assert console_errors(browser) == []
    browser.delete_all_cookies()


def test_the_figures_compare_with_the_period_before(served, browser):
    url, _ = served
    drawn_panels(browser, url + f"/requests/-/dashboard?start={since_two_days_ago()}")
    requests = browser.find_element(By.CSS_SELECTOR, '[data-kpi="requests"]')
    delta = requests.find_element(By.CSS_SELECTOR, ".log-kpi-delta")
    # This period's requests: NOW's, and those other tests of this module logged since.
    now = int(requests.find_element(By.CSS_SELECTOR, ".log-kpi-value").text.replace(",", ""))
    assert now >= NOW_ROWS
    change = round(100 * (now - OLD_ROWS) / OLD_ROWS)
    assert (delta.text, delta.get_attribute("title")) == (f"▲ {change}%", f"previous period: {OLD_ROWS}")
    line = browser.execute_script("""
        const chart = Chart.getChart(arguments[0]);
        const previous = chart.data.datasets.find(d => d.type === "line");
        return previous ? previous.data.reduce((a, b) => a + b, 0) : null;""",
        browser.find_element(By.CSS_SELECTOR, '[data-panel="traffic"] canvas'))
    assert line == OLD_ROWS
    assert console_errors(browser) == []


@pytest.mark.parametrize("framework", ["starlette", "django"])
def test_a_log_of_the_starlette_or_django_example_draws_every_panel(served, browser, framework):
    url, _ = served
    panels = drawn_panels(browser, url + f"/{framework}/-/dashboard")
    assert len(panels) >= 12
    for panel in panels:
        assert_drew_its_rows(browser, panel)
    # Starlette's route templates are what the routes panel names.
    routes = browser.execute_script("return Chart.getChart(arguments[0]).data.labels", browser.find_element(
        By.CSS_SELECTOR, '[data-panel="top_routes"] canvas'))
    assert ("/items/{id}" in routes) == (framework == "starlette"), routes
    screenshot(browser, f"{LINE}-dashboard-{framework}")
    assert console_errors(browser) == []


@pytest.mark.parametrize("query", QUERY_PAGES)
def test_the_ready_made_query_pages_open(served, browser, query):
    served, _ = served
    browser.get(served + f"/requests/{query}")
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table.rows-and-columns, .zero-results"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.rows-and-columns tbody tr")
    assert rows, f"{query} showed no rows"
    screenshot(browser, f"{LINE}-query-{query}")
    assert console_errors(browser) == []


def docs_screenshot(out: pathlib.Path, rows: int = 300_000) -> None:
    """The README's picture: the dashboard of a synthetic 30-day log (benchmarks/synthetic_log.py)."""
    import sys
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthetic_log import make_log as make_synthetic_log

    with tempfile.TemporaryDirectory() as folder:
        log = pathlib.Path(folder) / "requests.db"
        make_synthetic_log(str(log), rows, days=30, seed=0)
        port = free_port()
        with running_server(["datasette", "serve", str(log), "-h", "127.0.0.1", "-p", str(port)], port):
            driver = chromium(pathlib.Path(folder) / "profile")
            try:
                # The top of the page: KPIs, traffic, status mix, latency and the top lists.
                driver.set_window_size(1280, 1500)
                drawn_panels(driver, f"http://127.0.0.1:{port}/requests/-/dashboard")
                saved = screenshot(driver, out.stem, out.parent, whole_page=False)
            finally:
                driver.quit()
    print(f"wrote {saved}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write the README's screenshot of the dashboard.")
    parser.add_argument("out", type=pathlib.Path, help="the PNG to write, e.g. docs/images/dashboard.png")
    parser.add_argument("--rows", type=int, default=300_000)
    arguments = parser.parse_args()
    docs_screenshot(arguments.out, arguments.rows)
