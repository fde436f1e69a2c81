"""Projections: the original layout rebuilt from a hand-built three-day log."""

from __future__ import annotations

import json

import msgspec
import pytest
from projection_log import BASE, C1, C2B, D1, D2, D3, HEADLINES, NS, build_log, headline_id

from events import codec
from events.schema import EpochTrained, RankedGroup
from varro.projections import ProjectionError, project, write_projections

S = f"timestamped_storage_{NS}"
T = f"training/gspo_{NS}"


@pytest.fixture(scope="module")
def log():
    return build_log()


@pytest.fixture(scope="module")
def files(log):
    return project(log["events"], NS)


def doc(files, path):
    return json.loads(files[path])


def test_file_set_is_the_original_layout_with_namespaced_training(files):
    expected = {f"{S}/index.json"}
    expected |= {f"{S}/{d}_headlines.json" for d in (D1, D2, D3)}
    expected |= {f"{S}/{d}_predictions.json" for d in (D1, D2, D3)}
    expected |= {f"{S}/{d}_{kind}.json" for d in (D1, D2) for kind in ("outcome_tracking", "evaluations")}
    expected |= {f"{T}/gspo_training_{d}.json" for d in (D1, D2)}
    assert set(files) == expected


def test_files_are_canonical_json(files):
    for path, data in files.items():
        value = json.loads(data)
        assert data == (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode(), path


def test_same_log_gives_bit_identical_files(log, files):
    assert project(log["events"], NS) == files
    assert project(iter(log["events"]), NS) == files
    redecoded = [codec.decode(codec.encode(event)) for event in log["events"]]
    assert project(redecoded, NS) == files


def test_headlines_file_holds_headlines_and_source_report(log, files):
    d = doc(files, f"{S}/{D2}_headlines.json")
    event = log["h2"]
    assert d["date"] == D2 and d["namespace"] == NS
    assert d["event"]["event_id"] == event.event_id and d["event"]["superseded_event_ids"] == []
    assert [h["text"] for h in d["headlines"]] == HEADLINES[D2]
    assert d["headline_count"] == 4
    assert d["headlines"][0] == msgspec.to_builtins(event.headlines[0])
    failed = next(s for s in d["sources"] if s["status"] == "failed")
    assert failed["source"] == "wsj.com" and failed["error"] == "HTTP 503 after 3 attempts"


def test_predictions_file_holds_every_rollout(log, files):
    d = doc(files, f"{S}/{D2}_predictions.json")
    event = log["g2"]
    assert d["checkpoint"]["sha256"] == C1.sha256
    assert d["sampler"] == {"name": "default", "temperature": 0.8, "top_p": 0.95, "top_k": 50, "max_tokens": 256}
    assert d["day_stats"]["rollouts"] == 32
    assert len(d["predictions"]) == 4
    first = d["predictions"][0]
    assert first["headline"] == HEADLINES[D2][0]
    assert first["headline_id"] == event.groups[0].headline_id
    for got, rollout in zip(first["rollouts"], event.groups[0].rollouts, strict=True):
        assert got == {
            "index": rollout.index,
            "seed": rollout.seed,
            "text": rollout.text,
            "n_tokens": rollout.n_tokens,
            "truncated": rollout.truncated,
            "structure_score": rollout.structure_score,
        }
    assert doc(files, f"{S}/{D3}_predictions.json")["checkpoint"]["sha256"] == C2B.sha256


def test_outcome_tracking_names_the_outcome_headlines_used(log, files):
    d = doc(files, f"{S}/{D2}_outcome_tracking.json")
    assert d["prediction_date"] == D2 and d["outcome_date"] == D3
    assert d["outcomes_event_id"] == log["h3"].event_id
    assert [h["id"] for h in d["outcome_headlines"]] == [headline_id(t) for t in HEADLINES[D3]]
    set_aside = {h["text"] for h in d["outcome_headlines"] if not h["judged_against"]}
    assert set_aside == {"Gold hits record above $2,950 an ounce"}  # already known on the prediction day
    assert d["outcome_headlines_judged_against"] == 2
    assert [p["headline"] for p in d["predictions_tracked"]] == HEADLINES[D2]


def test_forced_rerun_uses_latest_event_and_lists_superseded(log, files):
    evaluations = doc(files, f"{S}/{D2}_evaluations.json")
    assert evaluations["event"]["event_id"] == log["k2b"].event_id
    assert evaluations["event"]["forced"] is True
    assert evaluations["event"]["superseded_event_ids"] == [log["k2"].event_id]
    assert doc(files, f"{S}/{D2}_outcome_tracking.json")["event"]["superseded_event_ids"] == [log["k2"].event_id]
    training = doc(files, f"{T}/gspo_training_{D2}.json")
    assert training["event"]["event_id"] == log["e2b"].event_id
    assert training["event"]["superseded_event_ids"] == [log["e2"].event_id]


def test_evaluations_hold_ranks_rewards_rounds_and_per_day_stats(log, files):
    d = doc(files, f"{S}/{D2}_evaluations.json")
    event = log["k2b"]
    assert d["seed"] == 9 and d["outcome_date"] == D3
    for got, group in zip(d["groups"], event.groups, strict=True):
        assert got["headline_id"] == group.headline_id
        assert [r["rank"] for r in got["rollouts"]] == group.ranks
        assert [r["reward_scaled"] for r in got["rollouts"]] == group.rewards
        assert [r["raw_score_unscaled"] for r in got["rollouts"]] == group.raw_scores
        assert got["rounds"] == msgspec.to_builtins(group.rounds)
        assert len(got["rounds"]) == 7
    stats = d["day_stats"]
    assert stats["rewards_n"] == 32  # day 2's roll-outs only, not days 1 + 2
    assert stats["reward_avg_scaled"] == pytest.approx(0.5)
    assert (stats["reward_min_scaled"], stats["reward_max_scaled"], stats["negative_rewards"]) == (0.0, 1.0, 0)
    assert "per-day" in stats["scope"]
    assert doc(files, f"{S}/{D1}_evaluations.json")["day_stats"]["rewards_n"] == 24


def test_training_file_holds_metrics_lineage_variant_and_pi_old(log, files):
    d = doc(files, f"{T}/gspo_training_{D2}.json")
    assert d["variant"] == "gspo" and d["pi_old"] == "recomputed"
    assert d["metrics"]["steps"] == 5  # this epoch's steps, not 3 + 5
    assert d["metrics"]["clip_frac_low_plus_high"] == pytest.approx(0.07)
    assert d["metrics"]["kl_ref_k3"] is None
    assert d["parent_checkpoint"]["sha256"] == C1.sha256
    assert [(s["date"], s["checkpoint_sha256"]) for s in d["lineage"]] == [(D2, C2B.sha256), (D1, C1.sha256)]
    assert d["root_checkpoint_sha256"] == BASE.sha256
    assert d["ranked_event_id"] == log["k2b"].event_id


def test_index_summarises_dates_by_stage(log, files):
    d = doc(files, f"{S}/index.json")
    assert d["stages"] == ["fetch", "generate", "rank", "train"]
    assert sorted(d["dates"]) == [D1, D2, D3]
    assert d["dates"][D3]["rank"] is None and d["dates"][D3]["train"] is None
    assert d["dates"][D2]["rank"]["superseded_event_ids"] == [log["k2"].event_id]
    assert d["dates"][D2]["rank"]["files"] == [f"{S}/{D2}_evaluations.json", f"{S}/{D2}_outcome_tracking.json"]
    assert d["dates"][D1]["train"]["files"] == [f"{T}/gspo_training_{D1}.json"]


def test_non_finite_metric_stays_valid_json(log):
    e1 = log["e1"]
    broken = msgspec.structs.replace(e1, metrics=msgspec.structs.replace(e1.metrics, loss=float("nan")))
    events = [broken if ev is e1 else ev for ev in log["events"]]
    d = json.loads(project(events, NS)[f"{T}/gspo_training_{D1}.json"])
    assert d["metrics"]["loss"] == "NaN"


def test_events_of_another_namespace_are_refused(log):
    stray = msgspec.structs.replace(log["h1"], ns="other")
    with pytest.raises(ProjectionError, match="namespace 'other'"):
        project([*log["events"], stray], NS)


def test_bad_date_and_inconsistent_group_are_clear_errors(log):
    with pytest.raises(ProjectionError, match="invalid date"):
        project([msgspec.structs.replace(log["h1"], date="2025-3-3")], NS)
    k1 = log["k1"]
    group = k1.groups[0]
    short = RankedGroup(
        headline_id=group.headline_id, ranks=group.ranks, rewards=group.rewards[:-1], raw_scores=group.raw_scores
    )
    bad = msgspec.structs.replace(k1, groups=[short, *k1.groups[1:]])
    with pytest.raises(ProjectionError, match=group.headline_id):
        project([bad if ev is k1 else ev for ev in log["events"]], NS)


def test_write_projections_writes_atomically_and_leaves_unchanged_files_alone(tmp_path, files):
    write_projections(files, tmp_path, NS)
    for rel, data in files.items():
        assert (tmp_path / rel).read_bytes() == data
    inode = (tmp_path / S / "index.json").stat().st_ino
    write_projections(files, tmp_path, NS)
    assert (tmp_path / S / "index.json").stat().st_ino == inode
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_rebuild_removes_stale_files_and_touches_nothing_else(tmp_path, log, files):
    write_projections(files, tmp_path, NS)
    others = {
        f"timestamped_storage_{NS}2/{D1}_headlines.json": b"other namespace",
        "timestamped_storage_other/index.json": b"{}",
        "training/gspo_other/gspo_training_2025-03-03.json": b"other training",
        f"training/checkpoints/gspo_{NS}/final_model/config.json": b"checkpoint",
        "training/gspo_training_2025-03-03.json": b"legacy un-namespaced file",
        f"{S}/notes.txt": b"a user's note",
    }
    for rel, data in others.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / S / "2024-12-31_headlines.json").write_bytes(b"stale")

    two_days = [ev for ev in log["events"] if ev.date != D3 and not (isinstance(ev, EpochTrained) and ev.date == D2)]
    shorter = project(two_days, NS)
    write_projections(shorter, tmp_path, NS)

    on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == set(shorter) | set(others)
    for rel, data in others.items():
        assert (tmp_path / rel).read_bytes() == data
    assert not (tmp_path / T / f"gspo_training_{D2}.json").exists()
    assert (tmp_path / S / "index.json").read_bytes() == shorter[f"{S}/index.json"]


@pytest.mark.parametrize(
    "rel",
    [
        "timestamped_storage_other/index.json",
        f"{S}/../escape.json",
        f"training/checkpoints/gspo_{NS}/final_model/config.json",
        f"{S}/nested/x.json",
        f"{S}/index.txt",
    ],
)
def test_write_projections_refuses_paths_outside_its_namespace(tmp_path, rel):
    with pytest.raises(ProjectionError, match="not a projection file"):
        write_projections({rel: b"{}"}, tmp_path, NS)
    assert not any(tmp_path.iterdir())
