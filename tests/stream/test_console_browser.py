"""The console end to end in headless Chromium: a real consumer serving the session's champion on the
contract topics, the console started by its entry point, every page read as a user would.

Debian's `chromium` is driven through its own `/usr/bin/chromedriver` (never a downloaded browser or
driver). Each page is saved as a screenshot under the test's tmp dir (the path is printed), and into
$CONSOLE_SCREENSHOT_DIR as well when that is set (how docs/img/console.png is made).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from selenium.webdriver.support.ui import WebDriverWait

from mlops import schemas
from mlops.consumer.client import Sender
from mlops.feature_store import RedisFeatureStore
from mlops.schemas import ScoreRequest, TopKRequest
from mlops.settings import PROJECT_ROOT
from mlops.topics import REQUESTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CONSUMER = PROJECT_ROOT / "inference" / "queue_consumer.py"


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{url}: process exited: {log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {timeout}s: {log.read_text()[-3000:]}")


def start(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ),
                            cwd=PROJECT_ROOT)  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def consumer(settings, champion, workdir):
    """The stack's consumer 0, as `up` starts it: contract topics, metrics on INFERENCE_METRICS_PORT."""
    log = workdir / "inference-0.log"
    proc = start([sys.executable, str(CONSUMER), "--index", "0", "--reload-interval", "2"], log)
    wait_http(f"http://127.0.0.1:{settings.inference_metrics_port}/healthz", proc, log)
    yield proc
    stop(proc)


@pytest.fixture(scope="module")
def console_url(settings, mlflow_server, consumer, workdir, free_port):
    port = free_port()
    log = workdir / "console.log"
    proc = start([sys.executable, "-m", "mlops.console", "--port", str(port)], log)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, log, timeout=120)
    yield f"http://127.0.0.1:{port}"
    stop(proc)
    assert "Traceback" not in log.read_text(), f"the console logged an error: {log.read_text()[-3000:]}"


@pytest.fixture(scope="module")
def traffic(settings, champion, consumer):
    """A steady trickle of valid requests (about 40/s) while the pages are read, so the charts move."""
    store = RedisFeatureStore.from_settings(settings)
    users, movies = store.ids(champion.feature_set, "user"), store.ids(champion.feature_set, "item")
    rng = random.Random(5)
    stopping = threading.Event()

    def run() -> None:
        sender = Sender(settings, REQUESTS)
        while not stopping.is_set():
            for _ in range(8):
                rid = f"console-traffic-{uuid.uuid4().hex[:12]}"
                user = rng.choice(users)
                sender.send(TopKRequest(rid, user, 10) if rng.random() < 0.3 else
                            ScoreRequest(rid, user, tuple(rng.sample(movies, 5))))  # fmt: skip
            sender.flush()
            stopping.wait(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield users
    stopping.set()
    thread.join(30)


@pytest.fixture(scope="module")
def browser(workdir):
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install -y chromium chromium-driver "
                    "(./run.sh test installs them)")  # fmt: skip
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={workdir / 'chromium-profile'}", "--window-size=1360,1000"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(90)
    driver.implicitly_wait(20)  # elements of the next page, after a click that navigates (a busy machine is slow)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(workdir) -> Path:
    path = workdir / "screenshots"
    path.mkdir()
    print(f"\nconsole screenshots: {path}")
    return path


def screenshot(driver, shots: Path, name: str) -> Path:
    """The whole page (the window grown to the document's height), into `shots` and $CONSOLE_SCREENSHOT_DIR."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1360, "height": min(max(height, 600), 4000), "deviceScaleFactor": 1,
                            "mobile": False})  # fmt: skip
    path = shots / f"{name}.png"
    try:
        assert driver.save_screenshot(str(path))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    if os.environ.get("CONSOLE_SCREENSHOT_DIR"):
        Path(os.environ["CONSOLE_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["CONSOLE_SCREENSHOT_DIR"]) / path.name)
    return path


def text(driver) -> str:
    return driver.find_element("tag name", "body").text


def rows(driver, table_id: str) -> list[list[str]]:
    table = driver.find_element("id", table_id)
    return [[td.text for td in tr.find_elements("tag name", "td")] for tr in table.find_elements("tag name", "tr")[1:]]


def no_trace(driver) -> None:
    body = text(driver)
    assert "Traceback" not in body and "Internal Server Error" not in body, body[:2000]


def test_login_refuses_a_wrong_password_then_lets_the_admin_in(browser, console_url, settings, shots):
    browser.get(console_url + "/model")
    assert "/login" in browser.current_url
    browser.find_element("id", "username").send_keys(settings.airflow_admin_user)
    browser.find_element("id", "password").send_keys("not-the-password")
    browser.find_element("id", "login").click()
    assert "Wrong user name or password" in browser.find_element("id", "login-error").text
    screenshot(browser, shots, "0-login-refused")
    browser.get(console_url + "/")
    assert "/login" in browser.current_url, "a refused login must not open the console"
    browser.find_element("id", "username").send_keys(settings.airflow_admin_user)
    browser.find_element("id", "password").send_keys(settings.airflow_admin_password)
    browser.find_element("id", "login").click()
    WebDriverWait(browser, 30).until(lambda d: d.current_url.rstrip("/") == console_url)
    assert "signed in as " + settings.airflow_admin_user in text(browser)


def test_overview_shows_each_service_and_the_champion(browser, console_url, champion, shots):
    browser.get(console_url + "/")
    no_trace(browser)
    states = {r[0]: r[1] for r in rows(browser, "services")}
    assert {k: states[k] for k in ("redis", "kafka", "s3", "mlflow", "inference-0")} == dict.fromkeys(
        ("redis", "kafka", "s3", "mlflow", "inference-0"), "up"
    )
    assert states["airflow"] == "down"  # the fixtures run no Airflow: the page says so, in words
    pipeline = browser.find_element("id", "pipeline").text
    assert "Could not read the last pipeline run from Airflow" in pipeline and "is not reachable" in pipeline
    card = browser.find_element("id", "champion").text
    assert f"v{champion.model_version}" in card and champion.feature_set in card and "ndcg_at_10" in card
    screenshot(browser, shots, "1-overview")


def test_stream_page_charts_the_live_traffic(browser, console_url, traffic, shots):
    # Three samples in a row with every figure (two points make a line; a lone point is drawn as a dot); a
    # busy machine times some scrapes out, which leaves gaps.
    deadline = time.monotonic() + 120
    while True:
        browser.get(console_url + "/stream")
        no_trace(browser)
        lines = browser.find_element("id", "kpis").text.splitlines()  # value, label, value, label, ...
        figures = dict(zip(lines[1::2], lines[0::2], strict=True))
        drawn = len(browser.find_elements("css selector", "svg.chart polyline"))
        if all(figures[k] != "–" for k in ("answered, /s", "p99 latency, ms", "requests in, /s")) and drawn >= 3:
            break
        assert time.monotonic() < deadline, f"no live lines after 120s: {figures}, {drawn}, {text(browser)[:1500]}"
        time.sleep(2)
    assert float(figures["answered, /s"]) > 0 and float(figures["requests in, /s"]) > 0
    assert 0 < float(figures["p50 latency, ms"]) <= float(figures["p99 latency, ms"])
    charts = browser.find_elements("css selector", "svg.chart")
    assert len(charts) == 5
    assert "Lag per partition of inference-requests" in text(browser) and "partition 2" in text(browser)
    screenshot(browser, shots, "2-stream")


def test_kafka_page_lists_topics_offsets_and_the_latest_messages(browser, console_url, traffic, shots):
    browser.get(console_url + "/kafka?topic=inference-predictions&n=5")
    no_trace(browser)
    topics = {r[0]: r for r in rows(browser, "topics")}
    assert {"inference-requests", "inference-predictions", "inference-requests-dlq"} <= set(topics)
    assert topics["inference-requests"][1] == "3" and int(topics["inference-requests"][3]) > 0
    messages = rows(browser, "messages")
    assert 1 <= len(messages) <= 5
    result = json.loads(messages[0][4])
    assert schemas.parse_result(json.dumps(result))["request_id"].startswith("console-traffic-")
    screenshot(browser, shots, "3-kafka")


def test_a_poison_message_appears_on_the_dlq_page_with_its_reason(browser, console_url, settings, consumer, shots):
    marker = f"console-poison-{uuid.uuid4().hex[:8]}"
    sender = Sender(settings, REQUESTS)
    sender.send_raw(json.dumps({"request_id": marker, "user_id": 1, "k": 1000}).encode(), b"1")
    sender.send_raw(f"{marker} is not JSON".encode(), b"1")
    sender.flush()
    deadline = time.monotonic() + 60
    while True:
        browser.get(console_url + "/kafka/dlq?n=50")
        no_trace(browser)
        mine = [r for r in rows(browser, "dead-letters") if marker in r[3]] if marker in text(browser) else []
        if len(mine) == 2:
            break
        assert time.monotonic() < deadline, "the poison messages never showed on the DLQ page"
        time.sleep(2)
    by_reason = {r[1]: r for r in mine}
    assert set(by_reason) == {schemas.K_OUT_OF_RANGE, schemas.NOT_JSON}
    assert "'k' is 1000" in by_reason[schemas.K_OUT_OF_RANGE][2]
    assert json.loads(by_reason[schemas.K_OUT_OF_RANGE][3].split("\n")[0])["request_id"] == marker
    assert by_reason[schemas.NOT_JSON][3].startswith(f"{marker} is not JSON")
    assert by_reason[schemas.NOT_JSON][5].startswith("inference-requests p")
    browser.get(console_url + "/kafka/dlq?reason=k_out_of_range")
    assert {r[1] for r in rows(browser, "dead-letters")} == {schemas.K_OUT_OF_RANGE}
    screenshot(browser, shots, "4-dlq")


def test_model_page_compares_versions_and_shows_the_mlflow_plots(browser, console_url, champion, traffic, shots):
    deadline = time.monotonic() + 90  # the consumer measures drift every 10 s once its window holds enough rows
    while True:
        browser.get(console_url + "/model")
        no_trace(browser)
        if browser.find_elements("id", "drift-table") and browser.find_elements("id", "metrics"):
            break
        assert time.monotonic() < deadline, f"no drift table or metrics after 90s: {text(browser)[:2000]}"
        time.sleep(3)
    no_trace(browser)
    metrics = {r[0]: r for r in rows(browser, "metrics")}
    assert {"test_auc", "ndcg_at_10", "baseline_popularity_ndcg_at_10"} <= set(metrics)
    assert 0 < float(metrics["test_auc"][1]) <= 1
    images = browser.find_elements("css selector", "img.plot")
    assert images, "no MLflow plot on the page"
    WebDriverWait(browser, 30).until(
        lambda d: all(
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img) for img in images
        )
    )
    drift_rows = rows(browser, "drift-table")  # input, PSI, KS, drifted
    assert len(drift_rows) >= 10 and all(float(r[1]) >= 0 for r in drift_rows)
    assert [float(r[1]) for r in drift_rows] == sorted((float(r[1]) for r in drift_rows), reverse=True)
    assert f"(v{champion.model_version}," in browser.find_element("id", "drift").text
    assert "No challenger to compare" in browser.find_element("id", "online-verdict").text
    assert [r[0] for r in rows(browser, "online-table")] == ["champion", "challenger"]
    screenshot(browser, shots, "5-model")


def test_try_it_returns_ten_titles_beside_the_users_ratings(browser, console_url, champion, traffic, shots):
    browser.get(console_url + "/try")
    no_trace(browser)
    user = str(traffic[0])
    field = browser.find_element("id", "user")
    field.clear()
    field.send_keys(user)
    browser.find_element("id", "ask").click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_elements("id", "recommendations") or d.find_elements("css selector", "div.problem")
    )  # the answer's page (the form's page has neither)
    no_trace(browser)
    recommendations = rows(browser, "recommendations")
    assert len(recommendations) == 10, text(browser)[:2000]
    titles = [r[1] for r in recommendations]
    assert all(t and not t.startswith("(movie ") for t in titles), titles
    assert all(r[2] for r in recommendations), "every movie has at least one genre"
    assert f"model v{champion.model_version}" in text(browser)
    assert rows(browser, "rated"), "the user's rated movies are shown beside"
    screenshot(browser, shots, "6-try-it")


def ask(browser, console_url: str, user: str) -> None:
    """Type `user` into Try-it's form and send it (asking is a POST with the form's CSRF token)."""
    browser.get(console_url + "/try")
    field = browser.find_element("id", "user")
    field.clear()
    field.send_keys(user)
    browser.find_element("id", "ask").click()
    answered = "div.problem, div.note, #recommendations"  # the form's page has none of them
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", answered))


def test_try_it_says_in_words_when_the_user_is_unknown_or_not_a_user_id(browser, console_url, traffic, shots):
    ask(browser, console_url, "987654321")
    no_trace(browser)
    body = text(browser)
    assert "User 987654321 is unknown to feature set" in body and "cold-start fallback" in body
    assert "User 987654321 has no rated movies" in body
    assert len(rows(browser, "recommendations")) == 10  # the fallback still answers
    screenshot(browser, shots, "7-try-it-unknown-user")
    ask(browser, console_url, "abc")
    assert "“abc” is not a user id" in text(browser)
