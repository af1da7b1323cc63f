"""Training options are defined once: the CLI flags and the DAG parameter schema come from TrainOptions."""

from __future__ import annotations

from dataclasses import fields

import pytest
from typer.testing import CliRunner

from pipeline.catalog.spec import resolve_catalog
from pipeline.cli import app
from pipeline.errors import SpecError
from pipeline.settings import Settings
from pipeline.training.options import TrainOptions, cli_fields, json_schema

pytestmark = pytest.mark.unit


def test_every_cli_field_is_a_train_flag_with_its_default_and_help():
    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    for f in cli_fields():
        assert f"--{f.name.replace('_', '-')}" in text, f.name
        assert " ".join(f.metadata["help"].split())[:30] in text, f.name
    assert "--stop-after-steps" not in text and "--progress" not in text  # test-only fields stay off the CLI


def test_the_dag_schema_has_the_cli_fields_with_their_defaults_and_rejects_unknown_keys():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {f.name for f in cli_fields()} | {"progress"}
    defaults = {f.name: f.default for f in fields(TrainOptions)}
    for name, prop in schema["properties"].items():
        assert prop["default"] == defaults[name], name
    assert schema["properties"]["max_steps"]["type"] == ["integer", "null"]
    assert schema["properties"]["lr"]["type"] == "number"


def test_no_baseline_means_no_hybrid():
    assert TrainOptions(baseline=False).hybrid is False
    assert TrainOptions().hybrid is True


def test_resolve_catalog_uses_arguments_then_settings_then_the_specs_data_file(tmp_path):
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "items.csv").write_text("x\n")
    s = Settings(home=tmp_path / "h", data_dir=tmp_path)
    assert resolve_catalog(s) == (str(tmp_path / "myntra_fashion_styles/styles.csv.zip"), "myntra")
    assert resolve_catalog(s, "myntra", "shop/items.csv") == (str(tmp_path / "shop/items.csv"), "myntra")
    assert resolve_catalog(s, "myntra", "myntra-0123abcd") == ("myntra-0123abcd", "myntra")  # a snapshot id
    s2 = Settings(home=tmp_path / "h", data_dir=tmp_path, catalog_source="shop/items.csv")
    assert resolve_catalog(s2) == (str(tmp_path / "shop/items.csv"), "myntra")
    assert resolve_catalog(s2, "product1m")[0].endswith("product1m_test_ossurl_v2.txt")  # another spec's own file


def test_a_spec_without_data_file_needs_a_source(tmp_path):
    spec = tmp_path / "shop.yaml"
    spec.write_text("name: shop\nformat: csv\ncolumns: {product_id: id, title: t}\n")
    with pytest.raises(SpecError, match="names no data_file; pass the catalog"):
        resolve_catalog(Settings(home=tmp_path / "h", data_dir=tmp_path), str(spec))


@pytest.mark.unit
def test_encoder_defaults_replace_only_options_left_at_their_default():
    from pipeline.training.options import TrainOptions

    got = TrainOptions(lr=3e-4).with_defaults({"epochs": 8, "lr": 5e-5})
    assert got.epochs == 8 and got.lr == 3e-4  # epochs was at its default, lr was set
    assert TrainOptions().with_defaults({}) == TrainOptions()
