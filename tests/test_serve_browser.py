"""The explorer page in a real browser: Chromium from the system packages (/usr/bin/chromium),
headless, driven by Playwright. Each test checks what the page shows against the API's own
answers, at desktop and at phone width, and saves a screenshot (to pytest's temporary folder, and
to $MFREC_SCREENSHOT_DIR when set). In CI (CI=true) a missing Chromium or Playwright fails
instead of skipping."""
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_serve import (TOKEN, LiveServer, explicit_model, string_model,  # noqa: E402
                        write_labels)

CHROMIUM = os.environ.get("MFREC_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _need_browser():
    problem = None
    if importlib.util.find_spec("playwright") is None:
        problem = "Playwright is not installed (pip install '.[test]')"
    if problem is None and not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problem = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(problem)
        pytest.skip(problem)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from mfrec.serve import create_app
    folder = tmp_path_factory.mktemp("site")
    model, frame = explicit_model()
    model.save(folder / "m.mfrec")
    labels = write_labels(folder / "labels.csv", sorted(frame.item.unique()))
    implicit, _ = string_model()
    implicit.save(folder / "strings.mfrec")
    servers = (LiveServer(create_app(folder / "m.mfrec", labels=labels)),
               LiveServer(create_app(folder / "m.mfrec", labels=labels, token=TOKEN)),
               LiveServer(create_app(folder / "strings.mfrec")))
    yield servers
    for srv in servers:
        srv.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from playwright.sync_api import sync_playwright
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport=DESKTOP)
        context.set_default_timeout(15_000)
        yield context
        context.close()


@pytest.fixture
def page(browser, site):
    # every request the page makes goes to the server it came from
    pg = browser.new_page()
    requests = []
    pg.on("request", lambda r: requests.append(r.url))
    yield pg
    pg.close()
    origins = tuple(srv.url + "/" for srv in site)
    strays = [u for u in requests if not u.startswith(origins) and not u.startswith("data:")]
    assert not strays, strays


def shoot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = os.environ.get("MFREC_SCREENSHOT_DIR")
    if folder:
        shutil.copy(path, Path(folder) / name)


def expect(locator):
    # (the page's Content-Security-Policy forbids evaluating strings, so no wait_for_function)
    from playwright.sync_api import expect as _expect
    return _expect(locator)


def texts(page, selector):
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def api(site, path, body):
    return httpx.post(site[0].url + path, json=body, timeout=10).json()


def test_user_then_item_desktop(page, site, tmp_path):
    # a user's history and recommendations, labelled; then an item and its neighbours
    page.goto(site[0].url + "/#user/1003")
    page.wait_for_selector("#user-recs li a")
    recs = api(site, "/api/recommend", {"user": 1003, "n": 10})["items"]
    assert texts(page, "#user-recs li a") == [r["name"] for r in recs]
    history = api(site, "/api/user", {"user": 1003, "limit": 50})
    assert texts(page, "#user-history li a") == [r["name"] for r in history["items"]]
    assert page.inner_text("#user-count") == f"({history['n_items']})"
    similar = api(site, "/api/similar/users", {"user": 1003, "n": 5})["users"]
    assert texts(page, "#user-similar li a") == [f"user {u['user']}" for u in similar]
    assert "BiasedMF" in page.inner_text("#summary")
    shoot(page, tmp_path, "serve-desktop-user.png")

    page.click("#user-recs li a >> nth=0")
    page.wait_for_selector("#item-similar li a")
    assert page.inner_text("#item-name") == recs[0]["name"]
    neighbours = api(site, "/api/similar/items", {"item": recs[0]["item"], "n": 10})["items"]
    assert texts(page, "#item-similar li a") == [r["name"] for r in neighbours]
    page.go_back()
    page.wait_for_selector("#view-user:not([hidden]) #user-recs li a")

    # an unknown user: the server's message, no crash
    page.fill("#user-id", "99999")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "unknown user id 99999" in page.inner_text("#error")


def test_new_user_on_a_phone(page, site, tmp_path):
    # search by name, rate, and watch the fold-in recommendations follow, at phone width
    page.set_viewport_size(PHONE)
    page.goto(site[0].url + "/#new")
    page.wait_for_selector("#search-results li a")
    page.fill("#search", "film 12")
    expect(page.locator("#search-results li a").first).to_have_text("Film 12, The")
    page.click("[aria-label='rate Film 12, The 5']")
    page.wait_for_selector("#new-recs li a")
    want = api(site, "/api/recommend/new", {"ratings": [{"item": 12, "rating": 5}], "n": 10})
    assert texts(page, "#new-recs li a") == [r["name"] for r in want["items"]]
    assert texts(page, "#mine li a") == ["Film 12, The"]

    page.fill("#search", "33")
    expect(page.locator("#search-results li a").first).to_have_text("Film 33, The")
    page.click("[aria-label='rate Film 33, The 1']")
    want = api(site, "/api/recommend/new", {"ratings": [{"item": 12, "rating": 5},
                                                        {"item": 33, "rating": 1}], "n": 10})
    expect(page.locator("#new-recs li a")).to_have_text([r["name"] for r in want["items"]])
    assert page.inner_text("#mine-count") == "(2)"
    # nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, tmp_path, "serve-phone-new-user.png")

    page.click("[aria-label='remove Film 12, The']")
    expect(page.locator("#mine li a")).to_have_count(1)


def test_model_info_on_a_phone(page, site, tmp_path):
    page.set_viewport_size(PHONE)
    page.goto(site[0].url + "/#model")
    page.wait_for_selector("#model-params dt")
    facts = dict(zip(texts(page, "#model-facts dt"), texts(page, "#model-facts dd")))
    assert facts["class"] == "BiasedMF" and facts["users"] == "40" and facts["items"] == "30"
    params = dict(zip(texts(page, "#model-params dt"), texts(page, "#model-params dd")))
    assert params["n_factors"] == "3" and params["random_state"] == "0"
    training = dict(zip(texts(page, "#model-training dt"), texts(page, "#model-training dd")))
    info = httpx.get(site[0].url + "/api/info").json()
    assert training["ratings"] == str(info["training"]["n_ratings"])
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shoot(page, tmp_path, "serve-phone-model.png")


def test_token_prompt(page, site):
    # with a token set, the page asks for it once and then works
    page.goto(site[1].url + "/#user/1000")
    page.wait_for_selector("#token-box:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#user-recs li a")
    assert "BiasedMF" in page.inner_text("#summary")


def test_implicit_model_with_string_ids(page, site):
    # picks instead of stars; string ids go to the server as strings and come back unchanged
    page.goto(site[2].url + "/#user/u0")
    expect(page.locator("#user-recs li a").first).to_have_text("item i0")
    page.goto(site[2].url + "/#new")
    page.fill("#search", "i5")
    expect(page.locator("#search-results li a").first).to_have_text("item i5")
    page.click("[aria-label='pick item i5']")
    expect(page.locator("[aria-label='pick item i5']")).to_have_attribute("aria-pressed", "true")
    page.fill("#search", "i6")
    expect(page.locator("#search-results li a").first).to_have_text("item i6")
    page.click("[aria-label='pick item i6']")
    want = httpx.post(site[2].url + "/api/recommend/new", json={
        "ratings": [{"item": "i5"}, {"item": "i6"}], "n": 10}, timeout=10).json()
    assert sorted(r["item"] for r in want["items"][:2]) == ["i4", "i7"]
    expect(page.locator("#new-recs li a")).to_have_text([f"item {r['item']}"
                                                         for r in want["items"]])
