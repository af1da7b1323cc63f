"""The validation gate on slices of the real catalogs: clean data passes, planted defects are quarantined
exactly, drift trips, bad files give clear messages, and the row invariant holds everywhere."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from helpers.data import PRODUCT1M_TEST, myntra_lines, myntra_rows_with_commas, myntra_slice, product1m_slice
from helpers.fixtures_validate import unique_spec

from pipeline import db
from pipeline.errors import CatalogError, ValidationFailed
from pipeline.validation.validate import ValidationOptions, validate_catalog

SMALL = ValidationOptions(min_examples_per_tag=1)  # a 300-row slice is not a trainable catalog: no rare-tag warn


def check_invariant(r):
    assert r.rows_read == r.rows_accepted + r.rows_quarantined
    if r.accepted_path:
        assert len(pd.read_parquet(r.accepted_path)) == r.rows_accepted


# ---- clean real data -----------------------------------------------------------------------------------
@pytest.mark.data
def test_clean_myntra_slice_passes_with_report_and_records(validate_settings, myntra_spec, tmp_path, validate_db_url):
    r = validate_catalog(myntra_slice(tmp_path / "m.csv", 300), myntra_spec, validate_settings, options=SMALL)
    assert r.verdict == "pass", r.reasons
    assert (r.rows_read, r.rows_accepted, r.rows_quarantined) == (300, 300, 0)
    check_invariant(r)
    assert r.snapshot_id == f"{myntra_spec.name}-{r.digest[:16]}"
    assert r.drift["baseline"] is None
    # GX Data Docs: an index plus one validation page per suite, naming our rules
    html = [p.read_text(encoding="utf-8") for p in (validate_settings.reports_dir / "validation").rglob("*.html")]
    assert r.report_path.endswith("index.html") and len(html) >= 3
    assert any("title_length" in h or "expect_column_values_to_be_between" in h for h in html)
    saved = json.loads(Path(r.result_path).read_text(encoding="utf-8"))
    assert saved["verdict"] == "pass" and saved["rows_read"] == 300
    eng = sa.create_engine(validate_db_url)
    with eng.connect() as conn:
        row = conn.execute(sa.select(db.snapshots).where(db.snapshots.c.id == r.snapshot_id)).mappings().one()
    eng.dispose()
    assert row["verdict"] == "pass" and row["rows_accepted"] == 300
    assert row["stats"]["label_counts"]["gender"]["gender:male"] > 50

    again = validate_catalog(tmp_path / "m.csv", myntra_spec, validate_settings, options=SMALL)
    assert (again.snapshot_id, again.digest) == (r.snapshot_id, r.digest)  # rerun: same snapshot, upserted


@pytest.mark.data
def test_clean_product1m_slice_passes(validate_settings, tmp_path):
    spec = unique_spec("product1m")
    r = validate_catalog(product1m_slice(tmp_path / "p.txt", 300), spec, validate_settings, options=SMALL)
    assert r.verdict == "pass", r.reasons
    assert r.rows_accepted == 300
    check_invariant(r)


# ---- planted defects -----------------------------------------------------------------------------------
SHIRT = "Men,Apparel,Topwear,Shirts,{colour},Summer,2012,Casual,{title}"


def _line(pid: str, title: str, colour: str = "Blue") -> bytes:
    return f"{pid},{SHIRT.format(colour=colour, title=title)}".encode()


@pytest.fixture(scope="module")
def planted(tmp_path_factory, validate_db_url):
    """300 clean Myntra rows, then planted rows: {row_number: expected rule} for the bad ones."""
    lines = myntra_lines()
    first_id = lines[1].split(",")[0]
    body = [ln.encode() for ln in lines[: 1 + 300]]
    planted_lines = [
        (_line(first_id, "Planted duplicate id shirt"), "product_id_unique"),
        (_line("9000001", "NA"), "title_present"),
        (_line("9000002", "A" * 1_048_576), "title_length"),
        (_line("9000003", "Nul\x00 byte shirt"), "title_no_control_chars"),
        (_line("9000004", "") + "中文标题衬衫".encode("gbk"), "parseable_row"),
        (b"9000005,Men,Apparel", "parseable_row"),
        (_line("NA", "Planted shirt without id"), "product_id_present"),
        (myntra_rows_with_commas()[0].encode(), None),  # repaired by the spec's overflow rule
        (_line("9000006", "Planted unknown colour shirt", colour="Zzplanted"), None),  # new-tag candidate
        (_line("9000007", "Planted shirt, colour spelled None", colour="None").replace(b", colour", b" colour"), None),
    ]
    path = tmp_path_factory.mktemp("planted") / "planted.csv"
    path.write_bytes(b"\n".join(body + [ln for ln, _ in planted_lines]) + b"\n")
    expected = {301 + i: rule for i, (_, rule) in enumerate(planted_lines) if rule}
    home = tmp_path_factory.mktemp("home")
    from pipeline.settings import Settings

    settings = Settings(home=home, database_url=validate_db_url)
    result = validate_catalog(path, unique_spec("myntra"), settings, options=SMALL)
    return result, expected, path


@pytest.mark.data
def test_planted_defects_quarantine_exactly_the_planted_rows(planted):
    r, expected, _ = planted
    q = pd.read_csv(r.quarantine_path)
    assert dict(zip(q["row_number"], q["expectation"], strict=True)) == expected
    assert r.rows_read == 310 and r.rows_quarantined == len(expected) == 7
    check_invariant(r)
    assert r.verdict == "warn" and "7 rows quarantined" in r.reasons
    assert r.raise_for_verdict() is r  # warn is accepted
    assert r.quarantine_reasons == {
        "product_id_unique": 1,
        "title_present": 1,
        "title_length": 1,
        "title_no_control_chars": 1,
        "parseable_row": 2,
        "product_id_present": 1,
    }


@pytest.mark.data
def test_quarantine_table_holds_rule_value_and_reason(planted, validate_db_url):
    r, expected, _ = planted
    eng = sa.create_engine(validate_db_url)
    with eng.connect() as conn:
        rows = conn.execute(sa.select(db.quarantine).where(db.quarantine.c.snapshot_id == r.snapshot_id)).mappings()
        by_row = {q["row_number"]: q for q in rows}
    eng.dispose()
    assert set(by_row) == set(expected)
    dup = by_row[301]
    assert "already used by row 1" in dup["reason"] and dup["product_id"] == myntra_lines()[1].split(",")[0]
    big = by_row[303]
    assert "1048576 characters" in big["reason"] and len(big["value"]) < 300  # value is truncated
    assert "control character '\\x00'" in by_row[304]["reason"] and "\\x00" in by_row[304]["value"]
    assert "invalid utf-8 byte" in by_row[305]["reason"]
    assert "expected 10 fields, got 3" in by_row[306]["reason"]
    assert "product_id is missing" in by_row[307]["reason"]


@pytest.mark.data
def test_repaired_commas_null_spellings_and_unknown_tags_are_accepted(planted):
    r, _, _ = planted
    acc = pd.read_parquet(r.accepted_path).set_index("product_id")
    comma_id = myntra_rows_with_commas()[0].split(",")[0]
    assert "," in acc.loc[comma_id, "title"]
    assert not any(t.startswith("color:") for t in acc.loc["9000007", "tags"])  # "None" is no colour
    assert "color:zzplanted" in acc.loc["9000006", "tags"]
    assert "color:zzplanted" in r.new_tag_candidates  # reported, not quarantined


@pytest.mark.data
def test_library_tags_are_not_candidates_and_rare_trainable_tags_warn(
    validate_settings, add_library_tags, myntra_spec, tmp_path
):
    add_library_tags({"gender:male": "active", "gender:female": "active", "usage:ethnic": "retired"})
    r = validate_catalog(myntra_slice(tmp_path / "m.csv", 300), myntra_spec, validate_settings)  # default min 5
    assert "gender:male" not in r.new_tag_candidates and "color:navy" in r.new_tag_candidates  # no test adds it
    assert r.verdict == "warn" and r.rare_tags and min(r.rare_tags.values()) >= 1
    assert max(r.rare_tags.values()) < 5
    assert "usage:ethnic" not in r.rare_tags  # retired tags are not trainable
    assert any(f["name"] == "tag_min_examples" and f["kind"] == "warn" for f in r.failed_expectations)


@pytest.mark.data
def test_jsonl_lone_surrogate_title_is_quarantined_as_unparseable(validate_settings, tmp_path):
    spec = unique_spec("myntra", format="jsonl")
    lines = list(csv.DictReader(myntra_lines()[:41]))
    lines[3]["productDisplayName"] = "Broken \ud800 shirt"
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(rec) for rec in lines), encoding="utf-8")
    r = validate_catalog(path, spec, validate_settings, options=SMALL)
    assert r.quarantine_reasons == {"parseable_row": 1}
    assert "not valid UTF-8" in pd.read_csv(r.quarantine_path)["reason"].iloc[0]
    check_invariant(r)


# ---- drift ---------------------------------------------------------------------------------------------
@pytest.mark.data
def test_shifted_label_distribution_trips_drift(validate_settings, myntra_spec, tmp_path):
    lines = myntra_lines()
    base = validate_catalog(myntra_slice(tmp_path / "a.csv", 400), myntra_spec, validate_settings, options=SMALL)
    assert base.verdict == "pass"
    women = [ln for ln in lines[401:3000] if ln.split(",")[1] == "Women"][:300]
    shifted = tmp_path / "b.csv"
    shifted.write_text("\n".join([lines[0], *women]) + "\n", encoding="utf-8")

    r = validate_catalog(shifted, myntra_spec, validate_settings, options=SMALL)
    assert r.drift["baseline"] == base.snapshot_id
    assert r.drift["facets"]["gender"]["psi"] > 1.0 and 0 < r.drift["facets"]["gender"]["js"] <= 1
    assert r.drift["new_product_share"] == 1.0
    assert r.drift["title_length_psi"] is not None
    assert r.verdict == "warn"
    assert any("facet 'gender' shifted: PSI" in x for x in r.reasons)
    assert {"drift_label_psi", "drift_new_products"} <= {f["name"] for f in r.failed_expectations}
    drift_pages = list((validate_settings.reports_dir / "validation" / r.snapshot_id).rglob("*catalog_drift*.html"))
    assert drift_pages and "label_psi" in drift_pages[0].read_text(encoding="utf-8")

    strict = dataclasses.replace(SMALL, label_psi_fail=0.5)
    r2 = validate_catalog(shifted, myntra_spec, validate_settings, options=strict)
    assert r2.verdict == "fail" and any("gender" in x for x in r2.reasons)


@pytest.mark.data
def test_too_many_quarantined_rows_fail_with_the_main_reason(validate_settings, tmp_path):
    lines = myntra_lines()
    body = lines[1:31] + [_line(str(9100000 + i), "NA").decode() for i in range(10)]  # 25% bad titles
    path = tmp_path / "m.csv"
    path.write_text("\n".join([lines[0], *body]) + "\n", encoding="utf-8")
    r = validate_catalog(path, unique_spec("myntra"), validate_settings, options=SMALL)
    assert r.verdict == "fail" and r.rows_quarantined == 10
    assert any("more than max_quarantine_share 20%; most common: title_present" in x for x in r.reasons)
    check_invariant(r)
    lenient = dataclasses.replace(SMALL, max_quarantine_share=0.3)
    assert validate_catalog(path, unique_spec("myntra"), validate_settings, options=lenient).verdict == "warn"


# ---- whole-file problems -------------------------------------------------------------------------------
def _myntra_header(tmp_path, name="h.csv"):
    return myntra_slice(tmp_path / name, 0)


@pytest.mark.data
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "file is empty"),
        ("missing_column", r"missing required column\(s\) \['productDisplayName'\]"),
        ("truncated_gzip", "compressed file is corrupt or truncated"),
        ("parquet_types", "column 'productDisplayName' has type int64, expected string"),
    ],
)
def test_unusable_files_raise_a_clear_catalog_error(case, message, validate_settings, tmp_path):
    spec = unique_spec("myntra")
    if case == "empty":
        path = tmp_path / "empty.csv"
        path.write_bytes(b"")
    elif case == "missing_column":
        path = tmp_path / "m.csv"
        src = myntra_lines()[:20]
        path.write_text("\n".join(",".join(ln.split(",")[:-1]) for ln in src) + "\n", encoding="utf-8")
    elif case == "truncated_gzip":
        path = tmp_path / "m.csv.gz"
        path.write_bytes(gzip.compress("\n".join(myntra_lines()[:200]).encode())[:300])
    else:
        path = tmp_path / "m.parquet"
        frame = pd.read_csv(myntra_slice(tmp_path / "m.csv", 10), dtype=str)
        frame.assign(productDisplayName=range(10)).to_parquet(path)
        spec = dataclasses.replace(spec, format="parquet")
    with pytest.raises(CatalogError, match=message):
        validate_catalog(path, spec, validate_settings)


@pytest.mark.data
def test_header_only_fails_with_no_rows(validate_settings, tmp_path):
    r = validate_catalog(_myntra_header(tmp_path), unique_spec("myntra"), validate_settings)
    assert r.verdict == "fail" and r.rows_read == 0
    assert any(x.startswith("no rows") for x in r.reasons)
    check_invariant(r)
    with pytest.raises(ValidationFailed, match="failed validation: no rows"):
        r.raise_for_verdict()


@pytest.mark.data
def test_wrong_encoding_fails_when_most_rows_cannot_be_decoded(validate_settings, tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes(PRODUCT1M_TEST.read_text(encoding="utf-8").encode("gbk", errors="replace")[:20000])
    r = validate_catalog(path, unique_spec("product1m"), validate_settings)
    assert r.verdict == "fail" and r.rows_accepted == 0
    assert r.quarantine_reasons.keys() == {"parseable_row"}
    assert any("encoding" in x for x in r.reasons)
    check_invariant(r)


# ---- CLI -----------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(validate_settings, monkeypatch):
    from pipeline.settings import get_settings

    monkeypatch.setenv("TAGGER_HOME", str(validate_settings.home))
    monkeypatch.setenv("TAGGER_DATABASE_URL", validate_settings.database_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.integration
def test_cli_prints_verdict_quarantine_and_report(cli_env, planted, tmp_path, monkeypatch, capsys):
    from pipeline import cli

    _, _, planted_csv = planted
    monkeypatch.setattr(
        sys, "argv", ["tagger", "validate", str(planted_csv), "--spec", "myntra", "--min-examples", "1"]
    )
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "verdict: WARN" in out and "quarantined 7" in out
    assert "title_no_control_chars" in out and "parseable_row" in out
    assert "HTML report:" in out and "index.html" in out

    header_only = _myntra_header(tmp_path)
    monkeypatch.setattr(sys, "argv", ["tagger", "validate", str(header_only), "--spec", "myntra"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 1 and "verdict: FAIL" in capsys.readouterr().out

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    monkeypatch.setattr(sys, "argv", ["tagger", "validate", str(empty), "--spec", "myntra"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2 and "file is empty" in capsys.readouterr().err


@pytest.mark.data
def test_progress_bar_names_each_stage_and_the_rows_read(validate_settings, myntra_spec, tmp_path, capsys):
    from pipeline.catalog.readers import ROWS_PER_REPORT

    n = ROWS_PER_REPORT + 700  # one report while reading, one at the end
    r = validate_catalog(myntra_slice(tmp_path / "m.csv", n), myntra_spec, validate_settings, progress=True)
    err = capsys.readouterr().err
    stages = ["reading rows", "row checks", "tag checks", "drift checks", "Data Docs", "quarantine", "recording"]
    seen = [err.find(f"validate: {s}") for s in stages]
    assert all(i >= 0 for i in seen) and seen == sorted(seen), err[-2000:]  # every stage, in the order they ran
    assert f"{ROWS_PER_REPORT:,} rows" in err and f"{n:,} rows" in err
    assert "7/7" in err and r.rows_read == n
    check_invariant(r)

    validate_catalog(tmp_path / "m.csv", myntra_spec, validate_settings)  # not a terminal: no bar by default
    assert "validate:" not in capsys.readouterr().err


@pytest.mark.integration
def test_data_docs_render_in_headless_chromium_without_internet(planted, tmp_path):
    """Every host but loopback unresolvable: the index's table (drawn by bootstrap-table from JSON) and the
    pass/fail icons (Font Awesome) come from the copies in the package, and no page links a CDN any more."""
    from helpers.browser import headless_chromium
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pipeline.validation.offline_docs import external_assets

    r, _, _ = planted
    site = Path(r.report_path).parent
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 3 and all(external_assets(p.read_text(encoding="utf-8")) == [] for p in pages)
    with headless_chromium(1400, 900, offline=True) as b:
        b.get(Path(r.report_path).as_uri())
        WebDriverWait(b, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "table tbody tr td .fas"))
        rows = b.find_elements(By.CSS_SELECTOR, "table tbody tr")
        icon = b.find_element(By.CSS_SELECTOR, "table tbody tr td .fas")  # a pass or fail icon
        family = b.execute_script("return getComputedStyle(arguments[0], '::before').fontFamily", icon)
        width = b.execute_script("return arguments[0].getBoundingClientRect().width", icon)
        loaded = b.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        b.save_screenshot(str(tmp_path / "data_docs.png"))
    assert rows and "Font Awesome" in family and width > 0  # the icon font loaded, not a blank box
    assert not [u for u in loaded if u.startswith("http")], loaded  # (Chromium lists no file:// resources)
    assert (tmp_path / "data_docs.png").stat().st_size > 20_000
