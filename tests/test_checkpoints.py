"""Content-addressed, atomic checkpoints that stock mlx_lm loads, and their projections."""

import json
import os

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest
from gspo_fixtures import VOCAB, tiny_model, write_model_dir
from mlx.utils import tree_flatten

import varro.checkpoints as checkpoints
from varro.checkpoints import (
    CheckpointError,
    TrainerState,
    checkpoint_sha256,
    dated_path,
    load_trainer_state,
    publish,
    rolling_path,
    save_checkpoint,
)

TOKENS = mx.array(np.random.default_rng(0).integers(0, VOCAB, (2, 19)).astype(np.int32))


@pytest.fixture
def parent(tmp_path):
    return write_model_dir(tiny_model(7), tmp_path / "parent", dtype=mx.bfloat16)


def trained_model(seed):
    model = tiny_model(seed)
    model.set_dtype(mx.float32)
    return model


def save(model, parent, data_dir, step=1, optimizer=None):
    return save_checkpoint(
        model,
        parent_dir=parent,
        data_dir=data_dir,
        base_model="tiny",
        trainer_state=TrainerState(step=step, ema_baseline=0.4, seed=3, parent_sha256="p" * 64),
        optimizer_state=optimizer,
    )


def test_save_then_stock_load_gives_bit_identical_logits(parent, tmp_path):
    model = trained_model(1)
    want = np.array(model(TOKENS))
    ref = save(model, parent, tmp_path / "data", optimizer={"step": mx.array(3), "m": mx.ones((2, 2))})
    path = tmp_path / "data" / "checkpoints" / ref.sha256
    assert ref.path == str(path) and ref.base_model == "tiny"
    assert sorted(os.listdir(path)) == sorted(
        [
            ".varro-manifest.json",
            "config.json",
            "model.safetensors",
            "optimizer.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "trainer_state.json",
        ]
    )
    np.testing.assert_array_equal(np.array(model(TOKENS)), want)  # saving did not empty the model
    loaded, tokenizer = mlx_lm.load(str(path))
    assert all(v.dtype == mx.float32 for _, v in tree_flatten(loaded.parameters()))
    np.testing.assert_array_equal(np.array(loaded(TOKENS)), want)
    assert tokenizer.encode("t5 t9") == [5, 9]
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == "float32"
    state, optimizer = load_trainer_state(path)
    assert state == TrainerState(step=1, ema_baseline=0.4, seed=3, parent_sha256="p" * 64)
    assert optimizer["step"].item() == 3 and optimizer["m"].shape == (2, 2)


def test_content_addressing(parent, tmp_path):
    data = tmp_path / "data"
    a = save(trained_model(1), parent, data)
    again = save(trained_model(1), parent, data)
    assert a.sha256 == again.sha256 == checkpoint_sha256(a.path)
    other_state = save(trained_model(1), parent, data, step=2)
    other_weights = save(trained_model(2), parent, data)
    assert len({a.sha256, other_state.sha256, other_weights.sha256}) == 3  # the trainer state is content too
    assert sorted(os.listdir(data / "checkpoints")) == sorted([a.sha256, other_state.sha256, other_weights.sha256])
    base_state, base_opt = load_trainer_state(parent)
    assert base_state == TrainerState() and base_opt is None


def test_checkpoint_hash_names_bytes_not_location(parent, tmp_path):
    ref = save(trained_model(1), parent, tmp_path / "data")
    moved = tmp_path / "elsewhere"
    os.rename(ref.path, moved)
    assert checkpoint_sha256(moved) == ref.sha256
    (moved / "config.json").write_text("{}")
    assert checkpoint_sha256(moved) != ref.sha256
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint_sha256(tmp_path / "nothing")


def test_publish_makes_loadable_rolling_and_dated_projections(parent, tmp_path):
    data = tmp_path / "data"
    first = save(trained_model(1), parent, data)
    second = save(trained_model(2), parent, data)
    publish(first, data, "exp", "2025-01-02")
    publish(second, data, "exp", "2025-01-03")
    rolling = rolling_path(data, "exp")
    assert rolling == data / "training" / "checkpoints" / "gspo_exp" / "final_model"
    assert dated_path(data, "exp", "2025-01-02").name == "final_model_20250102"
    assert checkpoint_sha256(rolling) == second.sha256
    assert checkpoint_sha256(dated_path(data, "exp", "2025-01-02")) == first.sha256
    model, _ = mlx_lm.load(str(rolling))
    np.testing.assert_array_equal(np.array(model(TOKENS)), np.array(trained_model(2)(TOKENS)))
    # a backfill of an earlier date writes its dated projection but leaves the rolling one
    publish(first, data, "exp", "2025-01-01", rolling=False)
    assert checkpoint_sha256(rolling) == second.sha256
    assert checkpoint_sha256(dated_path(data, "exp", "2025-01-01")) == first.sha256


def test_a_crash_mid_save_leaves_the_previous_rolling_checkpoint_intact(parent, tmp_path, monkeypatch):
    data = tmp_path / "data"
    first = save(trained_model(1), parent, data)
    publish(first, data, "exp", "2025-01-02")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "_copy_tokenizer_files", crash)  # after the weights are written
    with pytest.raises(OSError, match="disk full"):
        save(trained_model(2), parent, data)
    assert os.listdir(data / "checkpoints") == [first.sha256]  # no partial directory left behind
    rolling = rolling_path(data, "exp")
    assert checkpoint_sha256(rolling) == first.sha256
    model, _ = mlx_lm.load(str(rolling))
    np.testing.assert_array_equal(np.array(model(TOKENS)), np.array(trained_model(1)(TOKENS)))


def test_publish_refuses_unknown_checkpoints_and_real_directories(parent, tmp_path):
    data = tmp_path / "data"
    ref = save(trained_model(1), parent, data)
    with pytest.raises(CheckpointError, match="not in"):
        publish(type(ref)(sha256="0" * 64, base_model="tiny"), data, "exp", "2025-01-02")
    rolling_path(data, "exp").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="real directory"):
        publish(ref, data, "exp", "2025-01-02")
    with pytest.raises(ValueError, match="invalid date"):
        publish(ref, data, "exp", "20250102")


def test_a_save_clears_temporaries_abandoned_by_a_hard_crash_but_not_recent_ones(parent, tmp_path):
    import time

    from varro.checkpoints import store_dir

    store = store_dir(tmp_path / "data")
    store.mkdir(parents=True)
    abandoned, recent = store / ".tmp-abandoned", store / ".tmp-recent"
    for d in (abandoned, recent):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"partial")
    day_old = time.time() - 2 * 24 * 3600
    os.utime(abandoned, (day_old, day_old))
    save(trained_model(1), parent, tmp_path / "data")
    assert not abandoned.exists()
    assert recent.exists()
