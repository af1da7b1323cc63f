"""The fit loop: a few steps lower the loss; an interrupted run resumes and ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
import torch
from helpers.data import myntra_slice

from pipeline.catalog.readers import read_catalog
from pipeline.catalog.spec import load_spec
from pipeline.errors import TrainingError
from pipeline.training.bundle import new_model
from pipeline.training.dataset import collate, prepare
from pipeline.training.loop import fit, tag_loss, tokenize_splits
from pipeline.training.options import TrainOptions

pytestmark = [pytest.mark.model, pytest.mark.slow]

OPTS = dict(max_length=16, batch_size=8, epochs=3, max_steps=8, min_tag_count=2, precision="fp32", progress=False,
            checkpoint_every=1000, lr=2e-4, head_lr=5e-3)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    spec = load_spec("myntra")
    frame = read_catalog(myntra_slice(tmp_path_factory.mktemp("m") / "m.csv", 50), spec).frame
    prep = prepare(frame, spec, min_tag_count=2)
    _, tok = new_model(None, prep.label_map)
    data = tokenize_splits(prep, tok, 16)
    return prep, tok, data


def _run(tiny, ckpt, **extra):
    prep, tok, data = tiny
    torch.manual_seed(13)
    model, _ = new_model(None, prep.label_map)
    state = fit(model, data, prep.label_map, TrainOptions(**OPTS | extra), pad_id=tok.pad_token_id,
                device=torch.device("cpu"), bf16=False, checkpoint_dir=ckpt)  # fmt: skip
    return model, state


def _loss(model, tiny) -> float:
    prep, tok, data = tiny
    ids, y = data["train"]
    model.eval()
    with torch.no_grad():
        input_ids, mask = collate(ids, tok.pad_token_id)
        return float(tag_loss(model(input_ids, mask), torch.from_numpy(y.astype("float32")), prep.label_map))


def test_a_few_steps_lower_the_loss_and_resume_matches(tiny, tmp_path):
    prep, tok, data = tiny
    torch.manual_seed(13)
    fresh, _ = new_model(None, prep.label_map)
    before = _loss(fresh, tiny)
    full, full_state = _run(tiny, tmp_path / "a")
    assert _loss(full, tiny) < 0.8 * before
    assert full_state.step == 8 and full_state.epoch >= 1  # crosses an epoch boundary (~5 batches/epoch)

    with pytest.raises(TrainingError, match="interrupted after step 3"):
        _run(tiny, tmp_path / "b", stop_after_steps=3)
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    resumed, state = _run(tiny, tmp_path / "b")
    assert state.step == full_state.step and state.best_step == full_state.best_step
    assert state.best_f1 == pytest.approx(full_state.best_f1)
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_tag_loss_matches_a_hand_computed_value_and_skips_rows_without_a_label():
    import math

    from pipeline.training.labels import LabelMap

    lm = LabelMap.build({"a": ["x", "y"], "m": ["u"]}, {"a": True, "m": False})
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [5.0, -5.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # row 1 has no tag in the exclusive facet "a"
    # row 0 cross-entropy: -log(1 / (1 + 3)) = log 4; row 1: nothing; BCE at logit 0: log 2 per row; mean of 2 rows
    assert float(tag_loss(logits, y, lm)) == pytest.approx((math.log(4) + 2 * math.log(2)) / 2, rel=1e-6)
    y[0, :2] = 0  # no exclusive label anywhere: only the multi-valued part remains
    assert float(tag_loss(logits, y, lm)) == pytest.approx(2 * math.log(2) / 2, rel=1e-6)


def test_min_steps_adds_epochs_to_a_small_catalog(tiny, tmp_path):
    """One epoch of this slice is a handful of steps; ``min_steps`` trains whole epochs until at least that many."""
    import math

    _, _, data = tiny
    per_epoch = math.ceil(len(data["train"][0]) / OPTS["batch_size"])
    _, state = _run(tiny, tmp_path / "c", epochs=1, max_steps=None, min_steps=2 * per_epoch + 1, patience=99)
    assert state.step == 3 * per_epoch and state.epoch == 3
    _, state = _run(tiny, tmp_path / "d", epochs=1, max_steps=None, min_steps=0, patience=99)
    assert state.step == per_epoch  # no floor: the one epoch asked for


@pytest.mark.unit
def test_early_stopping_counts_a_lower_val_loss_at_equal_micro_f1_as_progress():
    from pipeline.training.loop import FitState, improves

    state = FitState(best_f1=0.0, best_val_loss=5.0)  # a catalog of rare tags: nothing passes 0.5 yet
    assert improves(state, 0.0, 4.2)  # still learning: not a bad validation
    assert not improves(state, 0.0, 5.1)
    assert improves(state, 0.01, 9.9) and not improves(FitState(best_f1=0.5, best_val_loss=1.0), 0.49, 0.1)
