"""The review page (issue 19) as a reviewer uses it: ``tagger review serve`` in the background on a real Postgres,
Debian's headless Chromium with every host but loopback unresolvable (no CDN can help the page), keys and clicks
that decide items, and Postgres checked after each one. The screenshot is the README's."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.data import myntra_slice

from pipeline.catalog import taglib
from pipeline.catalog.importers import import_catalog
from pipeline.settings import Settings
from pipeline.tagging.batch import library_ids

pytestmark = pytest.mark.integration
ZH = {"gender:male": "男", "gender:female": "女", "color:gray": "灰色", "color:black": "黑色", "color:blue": "蓝色",
      "usage:casual": "休闲", "usage:sports": "运动", "color:white": "白色"}  # fmt: skip
N_PENDING = 55  # more than the page's 50: the page shows the least sure 50


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def review_server(tmp_path_factory, fresh_database, tiny_bundle):
    """A Myntra slice imported into an empty library (gender, usage and colour curated to active, with Chinese
    names), 55 pending model tags, and the review page explaining with the session's tiny bundle."""
    root = tmp_path_factory.mktemp("review_page")
    settings = Settings(home=root / "home", database_url=fresh_database("review_page"),
                        mlflow_tracking_uri=tiny_bundle.settings.mlflow_tracking_uri)  # fmt: skip
    import_catalog(settings, myntra_slice(root / "m.csv", 80), "myntra")
    engine = taglib.ensure_schema(settings)
    rnd = random.Random(7)
    with engine.begin() as conn:
        conn.execute(sa.text("update tags set status = 'active' where split_part(slug, ':', 1) in "
                             "('gender', 'usage', 'color')"))  # fmt: skip
        ids = library_ids(conn)
        for slug, name in ZH.items():
            if slug in ids:
                conn.execute(sa.text("insert into tag_names (tag_id, locale, name) values (:t, 'zh', :n) "
                                     "on conflict do nothing"), {"t": ids[slug], "n": name})  # fmt: skip
        active = sorted(s for s in ids if s.split(":")[0] in ("gender", "usage", "color"))
        for (pk,) in conn.execute(sa.text(f"select id from products order by id limit {N_PENDING}")).all():
            conn.execute(
                sa.text("insert into product_tags (product_pk, tag_id, source, model_name, model_version, score, "
                        "review_state) values (:p, :t, 'model', 'catalog-tagger', 1, :s, 'pending') "
                        "on conflict do nothing"),
                {"p": pk, "t": ids[rnd.choice(active)], "s": round(rnd.uniform(0.2, 0.49), 3)},
            )  # fmt: skip
    port = _free_port()
    env = {**os.environ, "TAGGER_HOME": str(settings.home), "TAGGER_DATABASE_URL": settings.database_url,
           "TAGGER_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri}  # fmt: skip
    log = (root / "serve.log").open("w")
    cmd = [sys.executable, "-m", "pipeline.cli", "review", "serve", "--port", str(port), "--by", "page-tester",
           "--bundle", str(tiny_bundle.path)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"review page did not start: {(root / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, engine, root
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        engine.dispose()


def _item(engine, item_id: int) -> dict:
    with engine.connect() as conn:
        row = conn.execute(sa.text("select i.state, i.decision, i.decided_by, d.slug as decided_tag, t.slug as tag, "
                                   "i.product_pk, i.tag_id from review_items i join tags t on t.id = i.tag_id "
                                   "left join tags d on d.id = i.decided_tag_id where i.id = :id"),
                           {"id": item_id}).mappings().one()  # fmt: skip
        q = "select source, review_state from product_tags where product_pk = :p and tag_id = :t"
        states = dict(conn.execute(sa.text(q), {"p": row["product_pk"], "t": row["tag_id"]}).all())
        events = conn.execute(sa.text("select action, actor from review_events where item_id = :id"),
                              {"id": item_id}).all()  # fmt: skip
    return {**row, "states": states, "events": [tuple(e) for e in events]}


def test_a_reviewer_decides_by_key_and_click_and_every_decision_lands_in_postgres(review_server, tmp_path):
    from helpers.browser import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, engine, root = review_server

    def items(b):
        return b.find_elements(By.CSS_SELECTOR, "article.item")

    def wait_status(b, el, text: str):
        WebDriverWait(b, 20).until(lambda _: text in el.find_element(By.CSS_SELECTOR, ".status").text)
        return el.find_element(By.CSS_SELECTOR, ".status").text

    # offline: every name but loopback fails to resolve, so a CDN link would leave the page unstyled
    with headless_chromium(1400, 1000, offline=True) as b:
        b.get(f"{url}/?kind=model_tag")
        WebDriverWait(b, 30).until(lambda d: len(items(d)) == 50)
        nav = b.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
        paint = b.execute_script(
            "return (performance.getEntriesByName('first-contentful-paint')[0] || {startTime: null}).startTime"
        )
        print(f"\nreview page, 50 items: first contentful paint {paint} ms, DOMContentLoaded "
              f"{nav['domContentLoadedEventEnd']:.0f} ms, load {nav['loadEventEnd']:.0f} ms")  # fmt: skip
        resources = b.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert resources and all(r.startswith(url) for r in resources), resources
        first = items(b)[0]
        assert first.value_of_css_property("border-left-width") == "4px"  # the package's stylesheet applied
        assert "current" in first.get_attribute("class")  # the least sure item is selected for the keys
        assert "灰色" in b.page_source or "男" in b.page_source  # Chinese tag names beside the English ones

        # a: accept the selected item by key
        first_id = int(first.get_attribute("data-id"))
        b.find_element(By.TAG_NAME, "body").send_keys("a")
        assert wait_status(b, first, "accept") == "accept by page-tester"
        got = _item(engine, first_id)
        assert (got["state"], got["decision"], got["decided_by"]) == ("decided", "accept", "page-tester")
        assert got["states"]["model"] == got["states"]["reviewer"] == "accepted"  # (a human label may be there too)
        assert got["events"] == [("accept", "page-tester")]

        # the selection moved on; r: reject it by key
        second = b.find_element(By.CSS_SELECTOR, "article.item.current")
        second_id = int(second.get_attribute("data-id"))
        assert second_id != first_id
        b.switch_to.active_element.send_keys("r")
        wait_status(b, second, "reject")
        states = _item(engine, second_id)["states"]
        assert states["model"] == "rejected" and "reviewer" not in states

        # correct by click: a wrong tag is one line on the item, then the right one lands
        third = b.find_element(By.CSS_SELECTOR, "article.item.current")
        third_id = int(third.get_attribute("data-id"))
        facet = _item(engine, third_id)["tag"].split(":")[0]
        field = third.find_element(By.CSS_SELECTOR, "input[data-action=correct]")
        field.send_keys(f"{facet}:no-such-value")
        third.find_element(By.CSS_SELECTOR, "button[data-action=correct]").click()
        assert wait_status(b, third, "no tag") == f"no tag '{facet}:no-such-value' in the library"
        assert _item(engine, third_id)["state"] == "open"
        right = next(s for s in ZH if s.startswith(facet + ":") and s != _item(engine, third_id)["tag"])
        field.clear()
        field.send_keys(right + "\n")
        wait_status(b, third, "correct")
        got = _item(engine, third_id)
        assert (got["decision"], got["decided_tag"]) == ("correct", right)

        # explain: the words of the product text, highlighted per tag, from the bundle
        fourth = b.find_element(By.CSS_SELECTOR, "article.item.current")
        fourth.find_element(By.CSS_SELECTOR, "button[data-explain]").click()
        WebDriverWait(b, 60).until(lambda _: fourth.find_elements(By.CSS_SELECTOR, ".explain .took"))
        lines = fourth.find_elements(By.CSS_SELECTOR, ".explain .line")
        tag = _item(engine, int(fourth.get_attribute("data-id")))["tag"]
        assert tag in [ln.get_attribute("data-slug") for ln in lines]  # the item's own tag, predicted or not
        assert fourth.find_elements(By.CSS_SELECTOR, ".explain mark")
        shot = tmp_path / "review_page.png"
        b.save_screenshot(str(shot))

        # a reload shows the queue without the decided items
        b.get(f"{url}/?kind=model_tag")
        WebDriverWait(b, 30).until(lambda d: items(d))
        shown = {int(el.get_attribute("data-id")) for el in items(b)}
        assert not shown & {first_id, second_id, third_id} and len(shown) == 50  # 52 open, the first 50

    assert shot.stat().st_size > 30_000  # a rendered page, not a blank one
    if os.environ.get("TAGGER_UPDATE_SCREENSHOTS"):
        shutil.copy(shot, Path(__file__).parents[1] / "reports" / "review_page.png")


def test_a_candidate_is_promoted_on_the_page_and_the_api_refuses_in_one_line(review_server):
    from helpers.browser import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, engine, _ = review_server
    with headless_chromium(offline=True) as b:
        b.get(f"{url}/?kind=candidate&facet=season")
        WebDriverWait(b, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.item"))
        el = b.find_element(By.CSS_SELECTOR, "article.item.current")
        item_id = int(el.get_attribute("data-id"))
        assert el.get_attribute("data-kind") == "candidate"
        assert not el.find_elements(By.CSS_SELECTOR, "button[data-action=accept]")  # a candidate is not accepted
        b.switch_to.active_element.send_keys("p")
        WebDriverWait(b, 20).until(lambda _: "promote" in el.find_element(By.CSS_SELECTOR, ".status").text)
    got = _item(engine, item_id)
    with engine.connect() as conn:
        status = conn.scalar(sa.text("select status from tags where slug = :s"), {"s": got["tag"]})
    assert (got["decision"], status) == ("promote", "active")
    req = urllib.request.Request(f"{url}/api/items/{item_id}/decide", data=b'{"action": "promote"}',
                                 headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 400
    body = refused.value.read().decode()
    assert f"review item {item_id} was already decided: promote by page-tester" in body and "\\n" not in body
