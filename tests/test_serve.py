"""`mfrec serve`: every endpoint over real HTTP on a loopback port, the token, hot reload with a
good and a bad file, bad requests (hand-picked and fuzzed from the OpenAPI schema), metrics and
access logs, and the command line with SIGHUP."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

import mfrec  # noqa: E402
from conftest import low_rank_ratings, two_blocks  # noqa: E402

TOKEN = "s3cret-token"


# ---------------------------------------------------------------------- helpers (browser tests too)
class LiveServer:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = app
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)


def explicit_model(seed=0, n_factors=3):
    """BiasedMF on a low-rank matrix as 1-5 stars, ids not 0..n-1: users 1000+, items 10+."""
    (u, i, r), _, _ = low_rank_ratings(n_users=40, n_items=30, seed=seed)
    frame = pd.DataFrame({"user": u + 1000, "item": i + 10,
                          "rating": np.clip(np.round(r), 1, 5)})
    return mfrec.BiasedMF(n_factors=n_factors, n_epochs=30, random_state=seed,
                          num_threads=1).fit(frame), frame


def string_model():
    """ImplicitALS on two blocks with string ids: u0-u3 use i0-i3, u4-u7 use i4-i7; u0 has not
    used i0 and u5 not i6."""
    X = two_blocks()
    u, i = np.nonzero(X)
    frame = pd.DataFrame({"user": [f"u{k}" for k in u], "item": [f"i{k}" for k in i],
                          "rating": 1.0})
    return mfrec.ImplicitALS(n_factors=4, random_state=0, num_threads=1).fit(frame), frame


def write_labels(path, items):
    path.write_text("item,name\n" + "".join(f'{i},"Film {i}, The"\n' for i in items))
    return path


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    exp, exp_frame = explicit_model()
    imp, imp_frame = string_model()
    exp.save(folder / "explicit.mfrec")
    imp.save(folder / "strings.mfrec")
    labels = write_labels(folder / "labels.csv", sorted(exp_frame.item.unique()))
    return {"folder": folder, "explicit": folder / "explicit.mfrec", "exp_frame": exp_frame,
            "strings": folder / "strings.mfrec", "imp_frame": imp_frame, "labels": labels}


@pytest.fixture(scope="module")
def server(models):
    from mfrec.serve import create_app
    srv = LiveServer(create_app(models["explicit"], labels=models["labels"]))
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def sclient(models):
    from mfrec.serve import create_app
    srv = LiveServer(create_app(models["strings"], token=TOKEN))
    with httpx.Client(base_url=srv.url, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c
    srv.close()


@pytest.fixture(scope="module")
def model(models):
    return mfrec.load(models["explicit"])


def items_of(body):
    return [r["item"] for r in body["items"]]


# ---------------------------------------------------------------------- endpoints
def test_health_and_info(client, model, models):
    # info reports the file's model as trained (num_threads as saved, not the serving setting)
    assert client.get("/api/health").json() == {"status": "ok", "generation": 1}
    info = client.get("/api/info").json()
    frame = models["exp_frame"]
    assert info["class"] == "BiasedMF" and info["feedback"] == "explicit"
    assert (info["n_users"], info["n_items"], info["n_factors"]) == (40, 30, 3)
    assert info["training"]["n_ratings"] == len(frame)
    assert info["training"]["rating_range"] == [pytest.approx(frame.rating.min()),
                                                pytest.approx(frame.rating.max())]
    assert info["params"] == model.get_params() and info["params"]["num_threads"] == 1
    assert info["user_id_type"] == info["item_id_type"] == "integer"
    assert info["labels"] is True and info["capabilities"] == {"fold_in": True, "similar": True}
    top_user = frame.user.value_counts().sort_index(kind="stable").idxmax()
    assert info["examples"]["user"] == top_user


def test_recommend_matches_the_library(client, model):
    # what the service answers is exactly what the loaded model answers, option by option
    cases = [({}, {}), ({"exclude_seen": False}, {"exclude_seen": False}),
             ({"items": [10, 11, 12, 13, 14]}, {"items": [10, 11, 12, 13, 14]}),
             ({"exclude": [15, 16]}, {"exclude": [15, 16]})]
    for body, kwargs in cases:
        r = client.post("/api/recommend", json={"user": 1003, "n": 4, **body})
        assert r.status_code == 200, r.text
        ids, scores = model.recommend([1003], n=4, **kwargs)
        real = np.isfinite(scores[0])  # the library pads short rows; the service leaves it out
        got = r.json()
        assert got["user"] == 1003 and items_of(got) == ids[0][real].tolist()
        assert [x["score"] for x in got["items"]] == pytest.approx(scores[0][real].tolist(),
                                                                   rel=1e-6)
        assert got["items"][0]["name"] == f"Film {ids[0][0]}, The"
    # seen items are left out by default
    row = model.user_items_[model.user_vocab_.lookup([1003])[0]]
    seen = set(model.item_vocab_.ids[row.indices])
    all_recs = client.post("/api/recommend", json={"user": 1003, "n": 30}).json()
    assert set(items_of(all_recs)) == set(model.item_vocab_.ids) - seen  # padding dropped


def test_string_ids_known_answer(sclient):
    # u0 has used i1-i3 only: i0 is its top item; u5 misses i6. Ids come back as strings.
    r = sclient.post("/api/recommend", json={"user": "u0", "n": 1})
    assert r.json() == {"user": "u0", "items": [{"item": "i0", "score": pytest.approx(
        r.json()["items"][0]["score"]), "name": None}]}
    assert items_of(sclient.post("/api/recommend", json={"user": "u5", "n": 1}).json()) == ["i6"]
    batch = sclient.post("/api/recommend/batch", json={"users": ["u0", "u5"], "n": 1}).json()
    assert [(b["user"], items_of(b)) for b in batch["results"]] == [("u0", ["i0"]), ("u5", ["i6"])]
    # an integer is not a string id: 422 naming the field, not 404 and not a match on "0"
    r = sclient.post("/api/recommend", json={"user": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "user"]
    assert "valid string" in r.json()["detail"][0]["msg"]
    sim = sclient.post("/api/similar/items", json={"item": "i1", "n": 3}).json()
    assert sorted(items_of(sim)) == ["i0", "i2", "i3"]
    sim = sclient.post("/api/similar/users", json={"user": "u6", "n": 3}).json()
    assert sorted(u["user"] for u in sim["users"]) == ["u4", "u5", "u7"]
    # a new user who picked i5 and i6 gets the rest of that block first
    new = sclient.post("/api/recommend/new", json={"ratings": [{"item": "i5"}, {"item": "i6"}],
                                                   "n": 2}).json()
    assert sorted(items_of(new)) == ["i4", "i7"] and new["n_ratings_used"] == 2
    assert sclient.get("/api/info").json()["feedback"] == "implicit"


def test_batch(client, model):
    r = client.post("/api/recommend/batch", json={"users": [1000, 1039, 1000], "n": 3,
                                                  "exclude": [10]})
    ids, _ = model.recommend([1000, 1039, 1000], n=3, exclude=[10])
    assert [(b["user"], items_of(b)) for b in r.json()["results"]] == [
        (u, row) for u, row in zip([1000, 1039, 1000], ids.tolist())]


def test_fold_in(client, model):
    ratings = {12: 5.0, 20: 1.0, 33: 4.5}
    r = client.post("/api/recommend/new", json={
        "ratings": [{"item": k, "rating": v} for k, v in ratings.items()], "n": 5})
    ids, scores = model.recommend(model.fold_in(ratings), n=5)
    assert items_of(r.json()) == ids[0].tolist() and r.json()["n_ratings_used"] == 3
    assert not set(ratings) & set(items_of(r.json()))  # posted items are "seen"
    # unknown items: 404 by default, dropped on request
    body = {"ratings": [{"item": 12, "rating": 5}, {"item": 999, "rating": 3}], "n": 5}
    r = client.post("/api/recommend/new", json=body)
    assert r.status_code == 404 and "999" in r.json()["detail"]
    r = client.post("/api/recommend/new", json={**body, "unknown_items": "ignore"})
    assert r.status_code == 200 and r.json()["n_ratings_used"] == 1
    # an item listed twice: its last rating by default, combined or refused on request
    twice = [{"item": 12, "rating": 5}, {"item": 20, "rating": 1}, {"item": 12, "rating": 3}]
    for how, rating in (("last", 3.0), ("mean", 4.0), ("sum", 8.0), (None, 3.0)):
        body = {"ratings": twice, "n": 5, **({"duplicates": how} if how else {})}
        r = client.post("/api/recommend/new", json=body)
        ids, _ = model.recommend(model.fold_in({12: rating, 20: 1.0}), n=5)
        assert r.status_code == 200 and r.json()["n_ratings_used"] == 2, how
        assert items_of(r.json()) == ids[0].tolist(), how
    r = client.post("/api/recommend/new", json={"ratings": twice, "duplicates": "error"})
    assert r.status_code == 422 and "item 12 is listed more than once" in r.text


def test_predict(client, model):
    pairs = [(1000, 10), (1005, 22), (1039, 39)]
    r = client.post("/api/predict", json={"pairs": [{"user": u, "item": i} for u, i in pairs]})
    want = model.predict([p[0] for p in pairs], [p[1] for p in pairs])
    assert [p["rating"] for p in r.json()["predictions"]] == pytest.approx(want.tolist())
    assert [(p["user"], p["item"]) for p in r.json()["predictions"]] == pairs
    body = {"pairs": [{"user": 5, "item": 10}]}
    assert client.post("/api/predict", json=body).status_code == 404
    r = client.post("/api/predict", json={**body, "unknown": "fallback", "clip": False})
    assert r.json()["predictions"][0]["rating"] == pytest.approx(
        model.global_mean_ + model.item_bias_[0])


def test_similar(client, model):
    r = client.post("/api/similar/items", json={"item": 15, "n": 4}).json()
    ids, scores = model.similar_items([15], n=4)
    assert items_of(r) == ids[0].tolist()
    assert [x["score"] for x in r["items"]] == pytest.approx(scores[0].tolist(), rel=1e-6)
    r = client.post("/api/similar/users", json={"user": 1010, "n": 4}).json()
    ids, _ = model.similar_users([1010], n=4)
    assert [u["user"] for u in r["users"]] == ids[0].tolist()


def test_user_and_item(client, models):
    frame = models["exp_frame"]
    mine = frame[frame.user == 1007]
    r = client.post("/api/user", json={"user": 1007, "limit": 500}).json()
    assert r["n_items"] == len(mine)
    assert sorted((x["item"], x["rating"]) for x in r["items"]) == sorted(
        zip(mine.item, mine.rating))  # float32 ratings as written (3.2, not 3.2000000477)
    assert [x["rating"] for x in r["items"]] == sorted([x["rating"] for x in r["items"]],
                                                       reverse=True)
    assert len(client.post("/api/user", json={"user": 1007, "limit": 2}).json()["items"]) == 2
    r = client.post("/api/item", json={"item": 17}).json()
    col = frame[frame.item == 17].rating
    assert r == {"item": 17, "name": "Film 17, The", "n_ratings": len(col),
                 "mean_rating": pytest.approx(col.mean(), rel=1e-5)}


def test_search(client, models):
    frame = models["exp_frame"]
    r = client.get("/api/items/search", params={"q": "film 2", "limit": 50}).json()
    # "Film 20".."Film 29" and "Film 2x": every label containing the text, the id 2 is unknown
    assert sorted(x["item"] for x in r["items"]) == [i for i in range(20, 30)]
    r = client.get("/api/items/search", params={"q": "15"}).json()
    assert r["items"][0] == {"item": 15, "name": "Film 15, The",
                             "n_ratings": int((frame.item == 15).sum())}
    popular = client.get("/api/items/search", params={"limit": 3}).json()["items"]
    counts = frame.item.value_counts()
    assert [x["n_ratings"] for x in popular] == sorted(counts.tolist(), reverse=True)[:3]


def test_labels_in_movielens_format(tmp_path, models):
    from mfrec.serve.app import read_labels
    path = tmp_path / "u.item"
    path.write_bytes("10|Am\xe9lie (2001)|01-Jan-2001||http://x|0|1\n11|Heat (1995)|x\n"
                     .encode("latin-1"))
    labels = read_labels(path)
    assert labels["10"] == "Amélie (2001)" and labels["11"] == "Heat (1995)"


# ---------------------------------------------------------------------- bad requests
BAD = [
    ("/api/recommend", {"user": 77}, 404, "unknown user id 77"),
    ("/api/recommend", {"user": "1000"}, 422, "valid integer"),
    ("/api/recommend", {"user": 1000.5}, 422, "fraction"),
    ("/api/recommend", {"user": True}, 422, None),
    ("/api/recommend", {"user": 1000.0}, 200, '"user": 1000,'),  # JSON Schema: 1000.0 is 1000
    ("/api/recommend", {"user": 1000, "n": 0}, 422, "greater than or equal to 1"),
    ("/api/recommend", {"user": 1000, "n": 1001}, 422, "less than or equal to 1000"),
    ("/api/recommend", {"user": 1000, "n": "5"}, 422, None),
    ("/api/recommend", {"user": 1000, "exclude_seen": "no"}, 422, None),
    ("/api/recommend", {"user": 1000, "items": []}, 422, "at least 1 item"),
    ("/api/recommend", {"user": 1000, "items": [10, 500]}, 404, "unknown item id 500"),
    ("/api/recommend", {"user": 1000, "exclude": ["10"]}, 422, "valid integer"),
    ("/api/recommend", {"user": 1000, "bogus": 1}, 422, "Extra inputs"),
    ("/api/recommend", {"user": 2**70}, 404, "unknown user id"),  # a JSON integer, not int64
    ("/api/recommend", {}, 422, "Field required"),
    ("/api/recommend", [1, 2], 422, None),
    ("/api/recommend/batch", {"users": []}, 422, None),
    ("/api/recommend/batch", {"users": [1000] * 200, "n": 1000}, 422, "over the limit"),
    ("/api/recommend/new", {"ratings": [{"item": 10, "rating": "5"}]}, 422, None),
    ("/api/recommend/new", {"ratings": [{"item": 10, "rating": 1e300}]}, 422, None),
    ("/api/recommend/new", {"ratings": [{"item": 10, "rating": 1.5e6}]}, 422,
     "less than or equal to 1000000"),
    ("/api/recommend/new", {"ratings": [{"item": 10}], "unknown_items": "drop"}, 422, None),
    ("/api/recommend/new", {"ratings": [{"item": 10}], "duplicates": "first"}, 422,
     "'last', 'mean', 'sum' or 'error'"),
    ("/api/predict", {"pairs": []}, 422, None),
    ("/api/predict", {"pairs": [{"user": 1000}]}, 422, None),
    ("/api/similar/items", {"item": 9}, 404, "unknown item id 9"),
    ("/api/similar/users", {"user": 1000, "n": -1}, 422, None),
    ("/api/user", {"user": 1000, "limit": 0}, 422, None),
    ("/api/item", {"item": None}, 422, None),
]


@pytest.mark.parametrize("path,body,status,message", BAD)
def test_bad_request(client, path, body, status, message):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    if message:
        assert message in r.text


def test_malformed_and_oversized_bodies(client, server):
    # not JSON, NaN, a JSON body over the 1 MiB cap with and without Content-Length
    headers = {"Content-Type": "application/json"}
    r = client.post("/api/recommend", content=b"{user: 1", headers=headers)
    assert r.status_code == 422
    r = client.post("/api/recommend/new", content=b'{"ratings": [{"item": 10, "rating": NaN}]}',
                    headers=headers)
    assert r.status_code == 422
    big = json.dumps({"users": [1000] * 300_000}).encode()
    r = client.post("/api/recommend/batch", content=big, headers=headers)
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]

    def chunks():
        for s in range(0, len(big), 65536):
            yield big[s:s + 65536]
    r = client.post("/api/recommend/batch", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert client.get("/api/items/search", params={"q": "x" * 201}).status_code == 422
    assert client.get("/api/items/search", params={"limit": "many"}).status_code == 422
    assert client.get("/nope").status_code == 404
    assert client.get("/api/recommend").status_code == 405


def test_token(sclient, models):
    # every endpoint but health (and the page's static files) needs the bearer token
    url = str(sclient.base_url)
    with httpx.Client(base_url=url, timeout=10) as anon:
        assert anon.get("/api/health").status_code == 200
        assert anon.get("/").status_code == 200 and anon.get("/static/app.js").status_code == 200
        for method, path in [("get", "/api/info"), ("post", "/api/recommend"),
                             ("get", "/metrics"), ("get", "/openapi.json"),
                             ("post", "/api/admin/reload"), ("get", "/api/items/search")]:
            r = getattr(anon, method)(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        for auth in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer {TOKEN[:-1]}"):
            assert anon.get("/api/info", headers={"Authorization": auth}).status_code == 401
        assert anon.get("/api/info", headers={"Authorization": f"bearer {TOKEN}"}
                        ).status_code == 200
    assert sclient.get("/metrics").status_code == 200
    schema = sclient.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in schema["paths"]["/api/health"]["get"]


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    # nothing is fetched from elsewhere: no absolute URLs in what the page loads
    from mfrec.serve.app import STATIC
    for f in STATIC.iterdir():
        text = f.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f.name


# ---------------------------------------------------------------------- reload
def test_reload_good_and_bad_file(tmp_path, models, caplog):
    from mfrec.serve import create_app
    path = tmp_path / "served.mfrec"
    first, _ = explicit_model(seed=0)
    first.save(path)
    srv = LiveServer(create_app(path))
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            before = c.post("/api/recommend", json={"user": 1001, "n": 5}).json()
            second, _ = explicit_model(seed=1, n_factors=4)
            second.save(path)
            r = c.post("/api/admin/reload")
            assert r.status_code == 200 and r.json()["generation"] == 2
            after = c.post("/api/recommend", json={"user": 1001, "n": 5}).json()
            assert items_of(after) == second.recommend([1001], n=5)[0][0].tolist()
            assert c.get("/api/info").json()["n_factors"] == 4
            # a bad file: 409, the old model keeps serving, the log says why
            path.write_bytes(b"PK\x03\x04 not really a model")
            with caplog.at_level(logging.ERROR, logger="mfrec.serve"):
                r = c.post("/api/admin/reload")
            assert r.status_code == 409 and "still serving generation 2" in r.json()["detail"]
            event = json.loads(caplog.records[-1].getMessage())
            assert event["event"] == "reload_failed" and "corrupted" in event["error"]
            assert c.post("/api/recommend", json={"user": 1001, "n": 5}).json() == after
            assert c.get("/api/health").json()["generation"] == 2
            # a file with NaN factors passes mfrec.load but not the service's check
            second.item_factors_[0, 0] = np.nan
            second.save(path)
            r = c.post("/api/admin/reload")
            assert r.status_code == 409 and "NaN" in r.json()["detail"]
            metrics = c.get("/metrics").text
            assert 'mfrec_model_reloads_total{result="failed"} 2.0' in metrics
            assert 'mfrec_model_reloads_total{result="ok"} 1.0' in metrics
            assert before != after
    finally:
        srv.close()


def test_requests_during_reloads_never_fail(tmp_path):
    # requests running while the model is swapped back and forth get one model's whole answer
    from mfrec.serve import create_app
    path = tmp_path / "served.mfrec"
    a, _ = explicit_model(seed=0)
    b, _ = explicit_model(seed=1, n_factors=4)
    answers = {tuple(m.recommend([1002], n=5)[0][0].tolist()) for m in (a, b)}
    a.save(path)
    srv = LiveServer(create_app(path))
    seen, errors = [], []

    def hammer():
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for _ in range(100):
                r = c.post("/api/recommend", json={"user": 1002, "n": 5})
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    seen.append(tuple(items_of(r.json())))
    try:
        worker = threading.Thread(target=hammer)
        worker.start()
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            for k in range(4):
                (b if k % 2 == 0 else a).save(path)
                assert c.post("/api/admin/reload").status_code == 200
        worker.join()
    finally:
        srv.close()
    assert not errors and set(seen) <= answers and len(seen) == 100


# ---------------------------------------------------------------------- the fast paths and batching
def _without_fast_paths(app):
    """``app`` with the middleware's fast paths switched off: every request goes to FastAPI's
    routes (the middleware stack is built on the first request, from these arguments)."""
    for mw in app.user_middleware:
        if "fast" in mw.kwargs:
            mw.kwargs["fast"] = {}
    return app


JSON = {"Content-Type": "application/json"}
SAME_ANSWER = [  # (body bytes, headers): the fast path answers or hands back; FastAPI decides
    (b'{"user": 1003, "n": 4}', JSON),
    (b'{"user": 1003.0, "n": 4.0, "exclude_seen": false}', JSON),
    (b'{"user": 1003}', {"Content-Type": "application/json; charset=utf-8"}),
    (b'{"user": 1003}', {"Content-Type": "application/vnd.api+json"}),
    (b'{"user": 1003}', {"Content-Type": "text/plain"}),
    (b'{"user": 1003}', {}),
    (b'{"user": 1003, "items": [10, 11, 12]}', JSON),
    (b'{"user": 1003, "items": null, "exclude": []}', JSON),
    (b'{"user": 5}', JSON),
    (b'{"user": 123456789012345678901234567890}', JSON),
    (b'{"user": "1003"}', JSON),
    (b'{"user": true}', JSON),
    (b'{"user": 1003, "n": 0}', JSON),
    (b'{"user": 1003, "n": 1001}', JSON),
    (b'{"user": 1003, "extra": 1}', JSON),
    (b'{"user": 1003, "n": NaN}', JSON),
    (b'{"user": 1003, "user": 1004}', JSON),
    (b'[1003]', JSON),
    (b'{user: 1003', JSON),
    (b'', JSON),
    (b'\xff\xfe', JSON),
]


def test_fast_paths_answer_as_the_routes(models):
    # health and single-user recommend skip FastAPI's routing; for any request they give the
    # same status and body as the routes do (the OpenAPI schema is the routes')
    from mfrec.serve import create_app
    fast = LiveServer(create_app(models["explicit"], labels=models["labels"]))
    slow = LiveServer(_without_fast_paths(create_app(models["explicit"],
                                                     labels=models["labels"])))
    try:
        with httpx.Client(base_url=fast.url, timeout=10) as f, \
                httpx.Client(base_url=slow.url, timeout=10) as s:
            for body, headers in SAME_ANSWER:
                a = f.post("/api/recommend", content=body, headers=headers)
                b = s.post("/api/recommend", content=body, headers=headers)
                assert (a.status_code, a.json()) == (b.status_code, b.json()), body
                assert a.headers["content-type"] == b.headers["content-type"]
                assert a.headers["x-content-type-options"] == "nosniff"

            def chunked():
                yield b'{"user": 1003, '
                yield b'"n": 3}'
            a = f.post("/api/recommend", content=chunked(), headers=JSON)
            assert a.status_code == 200 and a.json() == s.post(
                "/api/recommend", json={"user": 1003, "n": 3}).json()
            assert f.get("/api/health").json() == s.get("/api/health").json()
            metrics = f.get("/metrics").text  # the fast paths count and time their requests
            assert 'route="/api/recommend",status="200"}' in metrics
            assert 'route="/api/recommend",status="404"}' in metrics
            assert 'mfrec_http_requests_total{method="GET",route="/api/health",status="200"}' \
                in metrics
    finally:
        fast.close()
        slow.close()


def test_concurrent_requests_are_batched_and_answered_as_alone(models, tmp_path):
    # requests arriving together are scored in one call of the model; each answer is what the
    # loaded model gives that user alone (a small catalogue is scored one user at a time), an
    # unknown user fails alone, and requests hold the snapshot they started on across a reload
    import asyncio

    from mfrec.serve import create_app
    from mfrec.serve.app import ClientError, Snapshot
    service = create_app(models["explicit"]).state.service
    model = mfrec.load(models["explicit"])
    other, _ = explicit_model(seed=1, n_factors=4)
    other.save(tmp_path / "other.mfrec")
    newer = Snapshot(tmp_path / "other.mfrec", None, 2)
    users = [1000, 1003, 1003, 1039, 5, 1010]

    async def ask():
        old = service.current
        futures = [service.batcher.submit(snap, snap.ids([u], "user", ["user"])[0], u, 5, True)
                   for snap in (old, newer) for u in users]
        return await asyncio.gather(*futures, return_exceptions=True)
    answers = asyncio.run(ask())
    for j, (fitted, got) in enumerate(zip([model] * 6 + [other] * 6, answers)):
        u = users[j % 6]
        if u == 5:
            assert isinstance(got, ClientError) and got.status == 404
            continue
        ids, scores = fitted.recommend([u], n=5)
        np.testing.assert_array_equal(got[0], ids[0])
        np.testing.assert_array_equal(got[1], scores[0])  # exactly, not approximately
    text = service.metrics.text().decode()
    # one flush, two groups (one per snapshot), 6 requests each
    assert "mfrec_recommend_batch_users_count 2.0" in text
    assert "mfrec_recommend_batch_users_sum 12.0" in text


def test_many_clients_at_once_get_the_library_answers(server, model):
    # over HTTP, from several threads: whatever is batched, each body is the lone answer
    users = model.user_vocab_.ids.tolist()
    want = {u: model.recommend([u], n=6) for u in users}
    wrong, errors = [], []

    def client(k):
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for j in range(30):
                u = users[(k * 7 + j) % len(users)]
                r = c.post("/api/recommend", json={"user": u, "n": 6})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                ids, scores = want[u]
                got = r.json()["items"]
                if ([x["item"] for x in got] != ids[0].tolist()
                        or [x["score"] for x in got] != scores[0].tolist()):
                    wrong.append(u)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong


# ---------------------------------------------------------------------- metrics and logs
def test_metrics_and_access_log(models, caplog):
    from mfrec.serve import create_app
    srv = LiveServer(create_app(models["explicit"]))
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c, \
                caplog.at_level(logging.INFO, logger="mfrec.serve.access"):
            for _ in range(3):
                c.post("/api/recommend", json={"user": 1000})
            c.post("/api/recommend", json={"user": 1})
            c.get("/static/app.js")
            text = c.get("/metrics").text
    finally:
        srv.close()
    assert ('mfrec_http_requests_total{method="POST",route="/api/recommend",status="200"} 3.0'
            in text)
    assert 'route="/api/recommend",status="404"} 1.0' in text
    assert 'mfrec_http_request_duration_seconds_count{route="/api/recommend"} 4.0' in text
    assert 'mfrec_http_request_duration_seconds_bucket{le="0.5",route="/api/recommend"}' in text
    assert 'route="/static"' in text and "mfrec_model_generation 1.0" in text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mfrec.serve.access"]
    assert [(x["method"], x["route"], x["status"]) for x in lines[:5]] == [
        ("POST", "/api/recommend", 200)] * 3 + [("POST", "/api/recommend", 404),
                                                 ("GET", "/static", 200)]
    assert all(x["client"] == "127.0.0.1" and x["ms"] >= 0 and x["bytes"] > 0 for x in lines)


# ---------------------------------------------------------------------- fuzzing from the schema
def test_schema_fuzzing(server):
    # schemathesis generates requests from the OpenAPI schema, valid and invalid: no 5xx, every
    # status code and body as the schema declares
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == 12
    deadline = time.monotonic() + 15  # bounded: the longer run is in benchmarks/bench_serve.py
    for op in ops:
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def fuzz(case):
            if time.monotonic() < deadline:
                case.call_and_validate(base_url=server.url)
        fuzz()


# ---------------------------------------------------------------------- the command line
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_sighup_and_bad_file(tmp_path):
    path = tmp_path / "m.mfrec"
    first, _ = explicit_model(seed=0)
    first.save(path)
    port = _free_port()
    env = {**os.environ, "MFREC_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "mfrec.cli", "serve", str(path), "--port",
                             str(port)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            assert c.get("/api/info").json()["n_factors"] == 3
            assert c.get("/api/info", headers={"Authorization": "Bearer no"}).status_code == 401
            second, _ = explicit_model(seed=1, n_factors=4)
            second.save(path)
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 20
            while c.get("/api/health").json()["generation"] != 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert c.get("/api/info").json()["n_factors"] == 4
            c.post("/api/recommend", json={"user": 1000})
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    # a clean stop: uvicorn finishes, then re-raises the signal it stopped on
    assert proc.returncode in (0, -signal.SIGTERM), err
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("event") == "reloaded" and e["reason"] == "SIGHUP" for e in events)
    assert any(e.get("path") == "/api/recommend" and e["status"] == 200 for e in events)
    # a file that is not a model: a message and exit code 1, no traceback
    bad = tmp_path / "bad.mfrec"
    bad.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "mfrec.cli", "serve", str(bad), "--port",
                        str(_free_port())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "not an mfrec model file" in r.stderr
    assert "Traceback" not in r.stderr
