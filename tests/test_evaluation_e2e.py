"""Held-out A/B end to end: real model, real server, the CLI, reports, charts and TensorBoard."""

from __future__ import annotations

import json

import msgspec
import pytest
from click.testing import CliRunner

from events.schema import Evaluated, PanelFrozen
from varro.cli import main
from varro.headlines.collect import sample_dates
from workers.inprocess import run_days
from workers.operations import ab, evaluate_day, verdict
from workers.runtime import Runtime

pytestmark = pytest.mark.slow

DAYS = sample_dates()[:3]
NS = "evale2e"


def small_config(data_dir, redis_url: str):
    """The end-to-end tests' shrunk pipeline (test_pipeline_e2e), with 2 roll-outs a side per panel headline."""
    from test_pipeline_e2e import small_config as pipeline_config

    cfg = pipeline_config(data_dir, NS)
    return msgspec.structs.replace(cfg, redis_url=redis_url, eval=msgspec.structs.replace(cfg.eval, k=2))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, redis_server):
    """Three sample days run in one namespace: two trained checkpoints, a base, a held-out panel."""
    import redis as redis_py

    data = tmp_path_factory.mktemp("evaldata")
    client = redis_py.Redis.from_url(redis_server.url)
    client.flushdb()
    rt = Runtime.create(small_config(data, redis_server.url), redis=client)
    run_days(rt, NS, DAYS, source="sample")
    yield rt
    rt.models.release()


def _cli(rt, *args):
    common = ["--ns", NS, "--data-dir", str(rt.cfg.data_path), "--redis-url", rt.cfg.redis_url]
    return CliRunner().invoke(main, [*args, *common], env={"VARRO_EVAL__K": "2"})


def test_ab_against_itself_ties_every_pair_and_its_interval_holds_half(trained):
    event = ab(trained, NS, DAYS[1], DAYS[1], "sample")
    assert isinstance(event, Evaluated)
    assert event.ties == event.pairs == 2 * event.headlines  # same seeds, same weights: the same answers
    assert event.win_rate.low <= 0.5 <= event.win_rate.high
    assert "is not distinguishable from" in verdict(event)


def test_ab_is_recorded_once_and_names_its_panel(trained):
    first = ab(trained, NS, "base", DAYS[1], "sample")
    again = ab(trained, NS, "base", DAYS[1], "sample")
    assert again == first and first.purpose == "vs_base" and first.date == DAYS[1]
    panel = trained.store(NS).get(first.panel_event_id)
    assert isinstance(panel, PanelFrozen) and panel.items == first.headlines
    assert first.a.label == "base" and first.b.checkpoint.sha256 != first.a.checkpoint.sha256
    assert first.pairs == first.k * first.headlines
    results = trained.artifacts.get(first.artifact)  # every pair's verdict and both sides' texts
    assert len(results) > 1000


def test_learning_curve_points_compare_each_day_with_the_base_and_its_parent(trained):
    events = evaluate_day(trained, NS, DAYS[1], "sample")
    assert [e.purpose for e in events] == ["vs_base", "vs_parent"]
    trained_day = trained.store(NS).latest("EpochTrained", DAYS[1])
    assert events[1].a.checkpoint.sha256 == trained_day.parent_checkpoint.sha256


def test_a_panel_the_checkpoint_trained_on_is_refused_before_anything_is_recorded(trained, tmp_path):
    from events.schema import HeadlinesFetched
    from varro.evaluation import panel as panels

    day = trained.store(NS).latest("HeadlinesFetched", DAYS[0])
    generated = trained.store(NS).latest("RolloutsGenerated", DAYS[0])
    assert isinstance(day, HeadlinesFetched)
    used = next(h for h in day.headlines if h.id == generated.groups[0].headline_id)
    leaky = panels.Panel(
        name="leaky",
        holdout_share=0.125,
        items=[panels.PanelItem(date=DAYS[0], headline=used, outcome_date=DAYS[1], outcomes=["Oil rises"])],
    )
    path = tmp_path / "leaky.json"
    path.write_bytes(panels.encode(leaky))
    before = trained.store(NS).count()
    result = _cli(trained, "ab", "--b", DAYS[1], "--panel", str(path))
    assert result.exit_code == 2 and "was trained on panel headline" in result.output
    assert "Traceback" not in result.output
    assert trained.store(NS).count() == before + 1  # the panel itself is recorded, no evaluation


def test_cli_ab_prints_the_verdict_and_report_shows_the_win_rate(trained, tmp_path):
    result = _cli(trained, "ab", "--a", "base", "--b", DAYS[1], "--panel", "sample")
    assert result.exit_code == 0, result.output
    assert "Verdict:" in result.output and "held-out headlines x 2" in result.output
    md = _cli(trained, "report", "--format", "markdown")
    assert md.exit_code == 0, md.output
    row = next(line for line in md.output.splitlines() if line.startswith(f"| {DAYS[1]}"))
    # the report shows the day's latest vs-base evaluation: this command's (its own sampler settings)
    vs_base = [e for e in (s.event for s in trained.store(NS).read(types=["Evaluated"])) if e.purpose == "vs_base"][-1]
    assert vs_base.sampler.max_tokens == 160
    assert f"{vs_base.win_rate.value:.3f}" in row
    as_json = json.loads(_cli(trained, "report", "--format", "json").output)
    assert [r["date"] for r in as_json] == DAYS
    assert as_json[1]["win_vs_base_low"] == vs_base.win_rate.low


def test_report_headers_are_whole_in_a_pipe(trained):
    out = _cli(trained, "report").output
    for header in ("Structure (avg)", "Negatives", "Improvement", "Position bias", "Win vs parent"):
        assert header in out


def test_charts_and_tensorboard_hold_the_reported_series(trained, tmp_path):
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from varro.plots import read_series

    result = _cli(
        trained, "report", "--format", "csv", "--plot", str(tmp_path / "png"), "--tensorboard", str(tmp_path / "tb")
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(_cli(trained, "report", "--format", "json").output)
    structure = read_series(tmp_path / "png" / "structure.png")
    assert structure == {NS: [[r["date"], r["avg_structure_score"]] for r in rows]}
    with Image.open(tmp_path / "png" / "structure.png") as image:
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # dark lines and text on a light canvas, not a blank image
    acc = EventAccumulator(str(tmp_path / "tb" / NS))
    acc.Reload()
    kl = [(s.step, s.value) for s in acc.Scalars("train/kl_old_k3")]
    assert kl == [(i, pytest.approx(r["kl_old"], rel=1e-6)) for i, r in enumerate(rows) if r["kl_old"] is not None]


def test_ab_in_a_namespace_with_nothing_recorded_is_one_clear_line(trained):
    result = CliRunner().invoke(
        main,
        [
            "ab",
            "--b",
            DAYS[1],
            "--ns",
            "nothing-here",
            "--data-dir",
            str(trained.cfg.data_path),
            "--redis-url",
            trained.cfg.redis_url,
        ],
    )
    assert result.exit_code == 2 and "namespace 'nothing-here' has no events" in result.output
    assert trained.store("nothing-here").count() == 0  # and nothing was recorded there


def test_a_picking_judge_is_asked_in_both_orders_on_the_real_model(trained):
    """The mlx judge (varro-tiny judging its own answers) through the real evaluation path: every pair is
    asked twice, disagreements between the orders are ties, and the counts add up."""
    import msgspec

    cfg = msgspec.structs.replace(trained.cfg, judge=msgspec.structs.replace(trained.cfg.judge, kind="mlx"))
    rt = Runtime(cfg=cfg, redis=trained.redis, artifacts=trained.artifacts, models=trained.models)
    event = ab(rt, NS, "base", DAYS[1], "sample")
    assert event.judge.startswith("mlx:") and event.pairs == event.k * event.headlines
    assert event.score_diff is None  # a picking judge gives no scores to subtract
    # varro-tiny as a judge mostly prefers a position (72 of 76 pairs measured): asked both ways, those cancel
    assert 0 < event.order_disagreements <= event.ties <= event.pairs
    assert event.judge_failures == 0  # the local judge reads letter log-probs: it always answers
    results = msgspec.msgpack.decode(trained.artifacts.get(event.artifact))
    verdicts = [p["verdict"] for p in results["pairs"]]
    assert sum(v == "tie" for v in verdicts) == event.ties
    assert event.win_rate.value == pytest.approx(
        sum({"b": 1.0, "tie": 0.5, "a": 0.0}[v] for v in verdicts) / len(verdicts)
    )
    assert ab(rt, NS, "base", DAYS[1], "sample") == event  # recorded once


def test_run_with_every_day_on_draws_a_learning_curve_and_ends_with_the_verdict(tmp_path, redis_server):
    """`varro run` with eval.every_day: each trained day is judged against the base and its parent on the
    bundled panel; the last line is the verdict on the newest checkpoint."""
    import redis as redis_py

    env = {
        "VARRO_GENERATION__MAX_HEADLINES": "4",
        "VARRO_GENERATION__PROFILES__DEFAULT__MAX_TOKENS": "32",
        "VARRO_TRAIN__MINIBATCHES": "2",
        "VARRO_WORKERS__RETRIES": "0",
        "VARRO_EVAL__K": "1",
        "VARRO_EVAL__EVERY_DAY": "true",
    }
    ns = "curve"
    args = ["run", "--to", DAYS[2], "--ns", ns, "--data-dir", str(tmp_path), "--redis-url", redis_server.url]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "vs_base: win rate" in result.output and "vs_parent: win rate" in result.output
    last_line = [line for line in result.output.splitlines() if line.strip()][-1]
    assert "Verdict:" in result.output.splitlines()[-2] + last_line  # the verdict closes the run
    from events.store import EventStore

    store = EventStore(redis_py.Redis.from_url(redis_server.url), ns)
    evaluated = [(s.event.purpose, s.event.date) for s in store.read(types=["Evaluated"])]
    assert evaluated == [("vs_base", DAYS[0]), ("vs_base", DAYS[1]), ("vs_parent", DAYS[1])]
