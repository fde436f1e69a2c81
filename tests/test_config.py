"""The typed config: defaults < TOML < environment < flags, errors that name the key, the recorded form."""

import json

import msgspec
import pytest

from varro.config import ConfigError, VarroConfig, config_from_recorded, load_config, recorded_config_bytes


def test_layers_apply_in_order(tmp_path):
    toml = tmp_path / "varro.toml"
    toml.write_text(
        'seed = 7\n[model]\nkernels = "mlx"\n[generation]\nbatch_size = 32\n[train]\nlearning_rate = 1e-5\n'
    )
    assert load_config(environ={}).generation.batch_size == "auto"  # the default
    from_file = load_config(toml, environ={})
    assert (from_file.seed, from_file.generation.batch_size, from_file.model.kernels) == (7, 32, "mlx")
    env = {"VARRO_GENERATION__BATCH_SIZE": "auto", "VARRO_TRAIN__LEARNING_RATE": "2e-6"}
    from_env = load_config(toml, environ=env)
    assert (from_env.generation.batch_size, from_env.train.learning_rate, from_env.seed) == ("auto", 2e-6, 7)
    flagged = load_config(toml, environ=env, overrides={"seed": 9, "ns": None})
    assert (flagged.seed, flagged.ns) == (9, "default")  # a flag left unset does not override


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"VARRO_GENERATION__BATCH_SIZE": "0"}, 'generation.batch_size: must be >= 1 or "auto", got 0'),
        ({"VARRO_GENERATION__BATCH_SIZE": "big"}, "generation.batch_size"),
        ({"VARRO_GENERATION__KV_CACHE_MB": "0"}, "generation.kv_cache_mb: must be >= 1"),
        ({"VARRO_MODEL__KERNELS": "fast"}, "model.kernels"),
        ({"VARRO_GENERATION__SAMPLER": "hot"}, "generation.sampler: unknown profile 'hot'"),
        ({"VARRO_TRAIN__LEARNING_RATE": "fast"}, "train.learning_rate"),
        ({"VARRO_TRAIN__NOPE": "1"}, "nope"),
        ({"VARRO_NS": "a b"}, "ns:"),
        ({"VARRO_TRAIN__ADV_EPS": "0"}, "train.adv_eps: must be > 0"),
        ({"VARRO_TRAIN__ADV_EPS": "-1e-4"}, "train.adv_eps: must be > 0"),
        ({"VARRO_WORKERS__RANK_SHARDS": "0"}, "workers.rank_shards: must be >= 1, got 0"),
    ],
)
def test_bad_values_fail_at_load_naming_the_key(environ, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(environ=environ)


def test_a_zero_advantage_eps_fails_at_load_not_at_training(tmp_path):
    """The trainer divides by std + adv_eps; a 0 there used to pass the config check and fail a day later."""
    toml = tmp_path / "varro.toml"
    toml.write_text("[train]\nadv_eps = 0.0\n")
    with pytest.raises(ConfigError, match=r"^train\.adv_eps: must be > 0 .*got 0\.0$"):
        load_config(toml, environ={})
    toml.write_text("[train]\nadv_eps = 1e-6\n")
    assert load_config(toml, environ={}).train.adv_eps == 1e-6


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[generation\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, environ={})


def test_the_recorded_config_leaves_out_the_machine_and_round_trips():
    cfg = load_config(
        environ={"VARRO_NS": "exp1", "VARRO_DATA_DIR": "/srv/varro", "VARRO_GENERATION__BATCH_SIZE": "24"}
    )
    data = recorded_config_bytes(cfg)
    assert b"/srv/varro" not in data and b"exp1" not in data
    here = VarroConfig(ns="replay", data_dir="/tmp/here")
    back = config_from_recorded(data, machine=here)
    assert (back.ns, back.data_dir, back.generation.batch_size) == ("replay", "/tmp/here", 24)
    assert msgspec.structs.replace(back, ns=cfg.ns, data_dir=cfg.data_dir) == cfg
    with pytest.raises(ConfigError, match="recorded config cannot be read"):
        config_from_recorded(b"{not json", machine=here)


def test_a_field_added_later_leaves_recorded_configs_and_their_ids_as_they_were(monkeypatch):
    """Config evolves like events: a recorded config without a new field reads it at the value
    it was introduced with, and a section hash ignores the field at that value."""
    from varro import config as config_module

    recorded = json.loads(recorded_config_bytes(VarroConfig()))
    del recorded["generation"]["holdout_share"]  # a day recorded before the hold-out existed
    back = config_from_recorded(json.dumps(recorded).encode(), machine=VarroConfig())
    assert back.generation.holdout_share == 0.0  # not today's default of 0.125
    assert VarroConfig().generation.holdout_share == 0.125

    # a new field in a hashed section: absent from the hash at its introduced value, present otherwise
    train = VarroConfig().section_hash("train")
    monkeypatch.setitem(config_module.INTRODUCED, ("train", "learning_rate"), VarroConfig().train.learning_rate)
    without = VarroConfig().section_hash("train")
    assert without != train  # the field left the hash
    bumped = msgspec.structs.replace(
        VarroConfig(), train=msgspec.structs.replace(VarroConfig().train, learning_rate=1e-3)
    )
    assert bumped.section_hash("train") not in (train, without)
