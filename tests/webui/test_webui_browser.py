"""The web UI in headless Chromium against the real local stack: Redis, MLflow, one CPU worker, gunicorn.

One scenario, in order (each test builds on the previous one's jobs): log in, queue a run, a sweep
of 2 and a job to cancel, see field errors, watch the run finish and its plots, promote it,
generate and download a submission, see the sweep's children, then crawl every page for errors.
Screenshots of each page go to test-output/screenshots/.
"""

from __future__ import annotations

import csv
import re
import time
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import expect
from ui_helpers import ADMIN, PASSWORD, shot

pytestmark = pytest.mark.slow
STATE: dict = {}
TINY = {
    "image_size": "32",
    "epochs": "2",
    "batch_size": "8",
    "eval_batch_size": "32",
    "device": "cpu",
    "warmup_epochs": "0",
}
JOB_S = 240_000  # ms: a tiny CPU job takes ~30 s, but it may wait behind the others on the one worker


@pytest.fixture(scope="module")
def site(ui_stack):
    return ui_stack


@pytest.fixture(scope="module")
def page(browser, site):
    """One logged-in browser tab for the scenario; console errors are collected."""
    context = browser.new_context(base_url=site.url, viewport={"width": 1360, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    tab.console_errors = []
    tab.on("console", lambda m: tab.console_errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.console_errors.append(str(e)))
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


def log_in(tab) -> None:
    tab.goto("/login")
    tab.fill("#in-username", ADMIN)
    tab.fill("#in-password", PASSWORD)
    tab.click("form.login-card button[type=submit]")
    expect(tab).to_have_url(re.compile(r"/jobs$"))


def submit(tab) -> None:
    tab.click("form.params-form button[type=submit]")
    tab.wait_for_load_state()


def queue_tiny_run(tab, name: str, **changes) -> str:
    """Fill the New run form from the quick preset with tiny values; returns the new job's run id."""
    tab.goto("/runs/new?preset=quick")
    tab.select_option("#in-dataset", "demo")
    tab.fill("#in-name", name)
    for key, value in {**TINY, **changes}.items():
        tab.fill(f"#in-{key}", value)
    submit(tab)
    expect(tab).to_have_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    return tab.url.rsplit("/", 1)[1]


def job_count(tab) -> int:
    return len(tab.request.get("/jobs.json").json()["jobs"])


def test_refused_without_login_or_csrf_token(browser, site):
    context = browser.new_context(base_url=site.url, viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.goto("/jobs")
    expect(tab).to_have_url(re.compile(r"/login\?next=/jobs"))
    expect(tab.locator('[data-role="login-needed"]')).to_contain_text("log in")
    shot(tab, "01-login")
    assert context.request.post("/runs/new", form={"dataset": "demo"}, max_redirects=0).status == 302
    tab.fill("#in-username", ADMIN)
    tab.fill("#in-password", "wrong")
    tab.click("form.login-card button[type=submit]")
    expect(tab.locator(".flash-error")).to_contain_text("wrong password")
    log_in(tab)
    before = job_count(tab)  # the stack is shared: other modules' jobs may be listed already
    refused = context.request.post("/runs/new", form={"dataset": "demo", **TINY})  # a session but no CSRF token
    assert refused.status == 400 and "security token" in refused.text()
    assert job_count(tab) == before
    context.close()


def test_queue_a_run(page):
    log_in(page)
    page.goto("/runs/new?preset=quick")
    expect(page.locator("#in-arch")).to_have_value("resnet18")
    shot(page, "02-new-run")
    STATE["run"] = queue_tiny_run(page, "first run")
    expect(page.locator(".flash-success")).to_contain_text("queued")
    expect(page.locator(".progress-card progress")).to_be_visible()
    shot(page, "03-job-queued")


def test_queue_a_sweep_of_two(page):
    page.goto("/sweeps/new?preset=quick")
    page.select_option("#in-dataset", "demo")
    page.click("details.shared summary")
    for key, value in {**TINY, "epochs": "1"}.items():
        page.fill(f"#in-{key}", value)
    page.fill('[name="grid.learning_rate"]', "1e-3, 3e-3")
    page.fill("#in-sweep\\.max_concurrent", "1")
    expect(page.locator('[data-role="preview-count"]')).to_have_text("2")
    page.fill('[name="grid.batch_size"]', "8, 16")
    expect(page.locator('[data-role="preview-count"]')).to_have_text("4")  # the server counts as you type
    page.fill('[name="grid.batch_size"]', "")
    expect(page.locator('[data-role="preview-button"]')).to_have_text("Queue sweep of 2 runs")
    shot(page, "04-new-sweep")
    submit(page)
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f]{32}$"))
    STATE["sweep"] = page.url.rsplit("/", 1)[1]
    expect(page.locator('[data-role="children"] tbody tr')).to_have_count(2)


def test_field_errors_for_bad_input(page):
    before = job_count(page)
    page.goto("/runs/new?preset=quick")
    page.fill("#in-learning_rate", "5")
    page.fill("#in-batch_size", "0")
    page.fill("#in-epochs", "many")
    submit(page)
    expect(page.locator('[data-field="learning_rate"]')).to_contain_text("less than or equal to 1")
    expect(page.locator('[data-field="batch_size"]')).to_contain_text("greater than or equal to 1")
    expect(page.locator('[data-field="epochs"]')).to_contain_text("valid integer")
    expect(page.locator("#in-epochs")).to_have_value("many")  # what was typed stays, to be corrected
    shot(page, "05-field-errors")
    assert job_count(page) == before


def test_back_after_queueing_keeps_the_form_and_says_it_was_queued(page):
    run_id = queue_tiny_run(page, "", learning_rate="0.0042")
    expect(page.locator("h1")).to_contain_text("r18 32px lr4.2e-3 bs8 2ep")  # unnamed: named after its settings
    page.go_back()
    expect(page).to_have_url(re.compile(r"/runs/new\?preset=quick$"))
    expect(page.locator("#in-learning_rate")).to_have_value("0.0042")  # the edits are kept
    expect(page.locator("#in-dataset")).to_have_value("demo")
    notice = page.locator('[data-role="just-queued"]')
    expect(notice).to_contain_text("just queued")
    expect(notice).to_contain_text("submitting again queues a second job")
    expect(notice.locator(f'a[href="/jobs/{run_id}"]')).to_be_visible()
    expect(page.locator("form.params-form button[type=submit]")).to_be_enabled()
    shot(page, "05b-back-after-queueing")
    page.locator('[data-role="start-over"]').click()
    expect(page).to_have_url(re.compile(r"/runs/new\?preset=quick$"))
    expect(page.locator("#in-learning_rate")).to_have_value("0.001")  # the preset again
    expect(page.locator('[data-role="just-queued"]')).to_have_count(0)
    page.goto(f"/jobs/{run_id}")  # spare the one worker: this job is not needed
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('.page-head [data-role="cancel"]')
    expect(page.locator('h1 [data-role="status"]')).to_have_text("cancelled", timeout=30_000)


def test_cancel_a_job(page):
    run_id = queue_tiny_run(page, "to cancel")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('.page-head [data-role="cancel"]')
    expect(page.locator('h1 [data-role="status"]')).to_have_text("cancelled", timeout=30_000)
    expect(page.locator('[data-role="cancelled"]')).to_contain_text(f"Cancelled by {ADMIN}")
    page.goto("/jobs")
    expect(page.locator(f'tr[data-run-id="{run_id}"] [data-role="status"]')).to_have_text("cancelled")
    expect(page.locator(f'tr[data-run-id="{STATE["run"]}"]')).to_be_visible()
    shot(page, "06-jobs")


def test_watch_the_run_reach_done_and_see_its_plots(page):
    page.goto("/jobs")
    label = page.locator(f'tr[data-run-id="{STATE["run"]}"] [data-role="label"]')
    seen: list[str] = []
    deadline = time.monotonic() + JOB_S / 1000
    while time.monotonic() < deadline:  # the list updates itself; no reload
        text = label.inner_text()
        if not seen or seen[-1] != text:
            seen.append(text)
            if text.startswith("epoch") and "07-jobs-live" not in STATE:
                STATE["07-jobs-live"] = shot(page, "07-jobs-live")
        if text == "done":
            break
        page.wait_for_timeout(250)
    assert seen[-1] == "done", seen
    assert any(t.startswith(("decoding", "epoch", "logging")) for t in seen), seen  # it moved on the way
    page.goto(f"/jobs/{STATE['run']}")
    plot = page.locator("img[data-plot]")  # F1 vs threshold; the curves and the confusion matrix are drawn live
    expect(plot).to_have_count(1)
    plot.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=plot.element_handle())
    expect(page.locator('[data-chart="loss"] svg path.line')).to_have_count(2)
    expect(page.locator('[data-chart="f1"] svg circle')).to_have_count(4)  # 2 curves x 2 epochs
    expect(page.locator("table.confusion")).to_be_visible()
    expect(page.locator('[data-role="log"]')).to_contain_text("epoch 2/2")
    shot(page, "08-job-finished")


def test_promote_a_version(page):
    page.goto("/models")
    page.locator('tr[data-version="1"] [data-role="promote"]').click()
    expect(page.locator("table.compare")).to_contain_text("none yet")
    shot(page, "09-promote-confirm")
    page.click('[data-role="confirm-promote"]')
    expect(page.locator('tr[data-version="1"] .badge-champion')).to_be_visible()
    expect(page.locator(".flash-success")).to_contain_text("champion")
    shot(page, "10-models")


def test_generate_a_submission_and_download_it(page, site):
    page.goto("/submissions")
    page.select_option("#in-dataset", "demo")
    page.select_option("#in-priority", "high")  # ahead of the sweep's second run
    expect(page.locator("#in-model_version")).to_contain_text("the champion (v1")
    page.click("form.params-form button[type=submit]")
    expect(page.locator(".flash-success")).to_contain_text("Prediction queued")
    link = page.locator('[data-role="download-submission"]').first
    expect(link).to_be_visible(timeout=JOB_S)  # the history refreshes itself when the job ends
    shot(page, "11-submissions")
    with page.expect_download() as download:
        link.click()
    with open(download.value.path(), newline="") as f:
        rows = list(csv.reader(f))
    test_images = sorted(p.name for p in (site.data / "demo" / "test").iterdir())
    assert rows[0] == ["id", "label"]
    assert sorted(r[0] for r in rows[1:]) == test_images and all(r[1] in ("0", "1") for r in rows[1:])


def test_the_sweep_ends_with_its_children_sorted_by_f1(page):
    page.goto(f"/jobs/{STATE['sweep']}")
    expect(page.locator('h1 [data-role="status"]')).to_have_text("finished", timeout=2 * JOB_S)
    rows = page.locator('[data-role="children"] tbody tr')
    expect(rows).to_have_count(2)
    scores = [float(t) for t in rows.locator("td:nth-child(6)").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    compare = page.locator('[data-role="compare"]').get_attribute("href")
    assert "#/compare-runs?runs=" in compare and all(
        r in compare for r in rows.evaluate_all("rs => rs.map(r => r.dataset.runId)")
    )
    shot(page, "12-sweep-finished")
    page.goto("/models")
    page.locator('tr[data-version="3"] [data-role="promote"]').click()
    expect(page.locator('[data-role="diff-f1"]')).to_have_text(re.compile(r"^[+−]\d\.\d{4}$|^–$"))
    shot(page, "13-promote-difference")


def test_a_phone_sees_every_page_without_sideways_scrolling(browser, site, page):
    """At 390 px the menu folds behind a button and no page is wider than the screen."""
    context = browser.new_context(
        base_url=site.url, viewport={"width": 390, "height": 844}, storage_state=page.context.storage_state()
    )
    tab = context.new_page()
    tab.goto("/jobs")
    nav = tab.locator("nav.mainnav")
    expect(nav).to_be_hidden()
    tab.click('[data-role="menu-toggle"]')
    expect(nav).to_be_visible()
    expect(tab.locator('[data-role="menu-toggle"]')).to_have_attribute("aria-expanded", "true")
    shot(tab, "14-phone-menu")
    for path in ("/jobs", f"/jobs/{STATE['run']}", f"/jobs/{STATE['sweep']}", "/runs/new", "/sweeps/new", "/models"):
        tab.goto(path)
        width = tab.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"
    shot(tab, "15-phone-models")
    context.close()


def _slug(path: str) -> str:
    path = re.sub(r"[0-9a-f]{32}", "RUN", path)
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "root"


def test_crawl_every_page_and_link(browser, site, page):
    """Follow every internal link from the nav as a logged-in user: no 4xx/5xx, no console errors."""
    context = page.context
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(f"{tab.url}: {m.text}") if m.type == "error" else None)
    tab.on("pageerror", lambda e: errors.append(f"{tab.url}: {e}"))
    origin = urlsplit(site.url).netloc
    queue, seen, shots, failures = ["/jobs"], set(), set(), []
    while queue and len(seen) < 60:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        if path.endswith(".csv") or "/plots/" in path:  # downloads and images: fetch, do not open as pages
            response = context.request.get(path)
            if response.status >= 400:
                failures.append(f"{path}: {response.status}")
            continue
        if urlsplit(path).path == "/mlflow":  # a hand-off to the MLflow UI: ours is the redirect, not MLflow's page
            response = context.request.get(path, max_redirects=0)
            location = response.headers.get("location", "")
            if response.status != 302 or not location.startswith(site.mlflow.url):
                failures.append(f"{path}: {response.status} to {location!r}")
            continue
        response = tab.goto(path, wait_until="load")
        if response is None or response.status >= 400:
            failures.append(f"{path}: {response.status if response else 'no response'}")
            continue
        tab.wait_for_timeout(300)  # let the page's script run its first refresh
        if _slug(urlsplit(path).path) not in shots and len(shots) < 30:
            shots.add(_slug(urlsplit(path).path))
            shot(tab, "crawl-" + _slug(path))
        for href in tab.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))"):
            url = urlsplit(urljoin(site.url + path, href))
            if url.netloc != origin or url.path.startswith("/static") or url.path == "/logout":
                continue
            target = url.path + (f"?{url.query}" if url.query else "")
            if target not in seen:
                queue.append(target)
    tab.close()
    assert not failures, failures
    assert not errors, errors
    assert {"/jobs", "/runs/new", "/sweeps/new", "/models", "/submissions", "/datasets", "/profile"} <= seen
    assert any(p.startswith("/jobs/") for p in seen) and any(p.endswith(".csv") for p in seen)
