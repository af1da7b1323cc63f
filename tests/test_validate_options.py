"""The CLI flags of `tagger validate` default to the same thresholds as ValidationOptions (named once)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from pipeline.commands.validate import FLAGS, validate
from pipeline.validation.validate import ValidationOptions

pytestmark = pytest.mark.unit


def test_cli_defaults_match_validation_options():
    params = inspect.signature(validate).parameters
    defaults = {f.name: f.default for f in dataclasses.fields(ValidationOptions)}
    for flag, field in FLAGS.items():
        assert params[flag].default.default == defaults[field], flag
    assert set(FLAGS.values()) == set(defaults) - {"split_seed"}
