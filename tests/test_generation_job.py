"""The generate job on a real event store and the tiny model: once, a no-op after, shards merge identically."""

import msgspec
import pytest

from events.ids import derive_event_id
from events.schema import Headline, HeadlinesFetched, RolloutsGenerated, SamplerSpec
from jobs.context import JobContext, derive_seed
from jobs.generate import GenerateInputError, choose_headlines, generate_rollouts_job, generate_shard, merge_shards
from varro import rollouts
from varro.artifacts import ArtifactStore
from varro.config import GenerationConfig, VarroConfig
from varro.model.cache import ModelCache

D = "2025-03-03"
HEADLINES = [
    Headline(id="h1", text="Oil falls as OPEC signals higher output", source="Reuters"),
    Headline(id="h2", text="Fed holds rates and signals cuts", source="CNBC"),
    Headline(id="h3", text="Nvidia beats estimates on data center sales", source="Bloomberg"),
]


@pytest.fixture(scope="module")
def models(tiny_model_path, tmp_path_factory):
    """One ModelCache for the module, as the model-holding worker keeps one across jobs."""
    return ModelCache(VarroConfig(data_dir=str(tmp_path_factory.mktemp("models"))))


@pytest.fixture
def ctx(event_store, tmp_path, models):
    store = event_store("gentest")
    store.append(
        HeadlinesFetched(
            event_id=derive_event_id(store.ns, "HeadlinesFetched", D, ["files"]),
            ns=store.ns,
            date=D,
            correlation_id="run-1",
            headlines=HEADLINES,
            sources=[],
            source_kind="file",
        )
    )
    profiles = {"short": SamplerSpec(name="short", temperature=0.8, top_p=0.95, top_k=50, max_tokens=48)}
    cfg = VarroConfig(
        ns=store.ns,
        data_dir=str(tmp_path),
        # every headline generated: these tests are about generation, not the hold-out
        generation=GenerationConfig(group_size=4, batch_size=8, sampler="short", profiles=profiles, holdout_share=0.0),
    )
    return JobContext(cfg=cfg, store=store, artifacts=ArtifactStore(tmp_path), models=models, correlation_id="c1")


def test_generates_once_and_is_a_noop_the_second_time(ctx):
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        first = generate_rollouts_job(ctx, D, base_seed=11)
    (said,) = [entry for entry in logs if entry["event"] == "generating"]
    assert (said["batch_rows"], said["kernels"], said["headlines"]) == (8, "auto -> numpy", 3)  # for the audit
    event = first.event
    assert first.created and isinstance(event, RolloutsGenerated)
    assert [g.headline_id for g in event.groups] == ["h1", "h2", "h3"]
    assert event.group_size == 4 and all(len(g.rollouts) == 4 for g in event.groups)
    assert event.checkpoint == ctx.models.base_ref() and event.base_seed == 11
    assert event.causation_id == event.headlines_event_id
    artifact = rollouts.decode(ctx.artifacts.get(event.artifact))
    assert artifact.checkpoint_sha256 == event.checkpoint.sha256
    for group in event.groups:
        for summary in group.rollouts:
            assert summary.seed == derive_seed(11, D, group.headline_id, summary.index)
    recorded = {(r.headline_id, r.index): r for r in artifact.rollouts}
    assert all(recorded[(g.headline_id, s.index)].text == s.text for g in event.groups for s in g.rollouts)
    assert event.stats.rollouts == 12 and event.stats.generated_tokens == sum(
        len(r.response_ids) for r in artifact.rollouts
    )

    again = generate_rollouts_job(ctx, D, base_seed=11)
    assert not again.created and again.event.event_id == event.event_id
    assert len(ctx.store.all_for("RolloutsGenerated", D)) == 1

    forced = generate_rollouts_job(ctx, D, base_seed=11, force=True)
    assert forced.created and forced.event.forced and forced.event.event_id != event.event_id
    assert forced.event.artifact == event.artifact  # same inputs, same bytes


def test_sharded_generation_merges_into_the_same_artifact(ctx, event_store):
    refs = [generate_shard(ctx, D, shard, 2, base_seed=5) for shard in (1, 0)]
    merged = merge_shards(ctx, D, refs, base_seed=5)
    assert merged.created
    # the same day generated in one job, in a namespace of its own (nothing shared but the inputs)
    store = event_store("gentest-whole")
    fetched = ctx.store.latest("HeadlinesFetched", D)
    store.append(
        msgspec.structs.replace(
            fetched,
            ns=store.ns,
            event_id=derive_event_id(store.ns, "HeadlinesFetched", D, ["files"]),
            prev_hash="",
            recorded_at="",
        )
    )
    alone = JobContext(
        cfg=msgspec.structs.replace(ctx.cfg, ns=store.ns), store=store, artifacts=ctx.artifacts, models=ctx.models
    )
    whole = generate_rollouts_job(alone, D, base_seed=5)
    assert whole.created and whole.event.event_id != merged.event.event_id
    assert merged.event.artifact == whole.event.artifact  # bit-identical roll-outs, token ids and log-probs
    assert merged.event.groups == whole.event.groups
    assert not generate_rollouts_job(ctx, D, base_seed=5).created  # the unsharded job finds the merged event
    with pytest.raises(GenerateInputError, match="missing"):
        merge_shards(ctx, D, refs[:1], base_seed=6)


def test_missing_headlines_and_capped_days(ctx):
    with pytest.raises(GenerateInputError, match="fetch the day first"):
        generate_rollouts_job(ctx, "2025-03-04")
    picked = choose_headlines(HEADLINES, 2, D)
    assert len(picked) == 2 and picked == [h for h in HEADLINES if h in picked]
    assert choose_headlines(HEADLINES, 2, D) == picked and choose_headlines(HEADLINES, None, D) == HEADLINES
    capped = msgspec.structs.replace(ctx.cfg, generation=msgspec.structs.replace(ctx.cfg.generation, max_headlines=1))
    ctx.cfg = capped
    event = generate_rollouts_job(ctx, D, base_seed=3).event
    assert len(event.groups) == 1


def test_the_hold_out_enters_the_id_only_when_it_is_on(ctx):
    """Days recorded before the hold-out existed (share 0) keep their ids; a share changes the id and
    keeps the panel's headlines out of the day."""
    from events.ids import canonical_hash
    from jobs.generate import plan_day
    from varro.evaluation.panel import held_out
    from varro.prompts import prompt_hash

    plan = plan_day(ctx, D, base_seed=11)
    fetched = ctx.store.latest("HeadlinesFetched", D)
    cfg = ctx.cfg
    old_inputs = [
        fetched.event_id,
        plan.checkpoint.sha256,
        canonical_hash(cfg.sampler()),
        prompt_hash(cfg, ctx.models.tokenizer(plan.checkpoint)),
        "seed:11",
        f"group:{cfg.generation.group_size}",
        f"cap:{cfg.generation.max_headlines}",
    ]
    assert plan.event_id == derive_event_id(ctx.ns, "RolloutsGenerated", D, old_inputs)
    share = 0.5
    ctx.cfg = msgspec.structs.replace(cfg, generation=msgspec.structs.replace(cfg.generation, holdout_share=share))
    held = plan_day(ctx, D, base_seed=11)
    assert held.event_id != plan.event_id
    kept = [h for h in HEADLINES if not held_out(h.id, share)]
    assert 0 < len(kept) < len(HEADLINES)  # this fixture's ids split at 0.5
    assert held.headlines == kept
