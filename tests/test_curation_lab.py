"""The curation lab's recipes (DataComp's baselines, LAION, MetaCLIP, SemDeDup, DFN) on a real
downloaded demo pool with its truth: every stage they need run for real (score, dedup,
annotate, cluster), every built-in recipe run by `curate filter`, and each one's kept share
and caption precision measured against truth.parquet (`--truth`)."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clihelp import run_curate
from curate.filter.recipes import list_recipes, load_recipe
from curate.filter.run import run_filter
from curate.truth.recipes import NOISY_CAPTION_KINDS, subset_quality
from poolfactory import make_pool
from scored_copy import scored_copy
from shards.layout import Pool

RANKER = "ranker"


@pytest.fixture(scope="module")
def lab(pool_dir, demo_dir, tmp_path_factory):
    """A copy of the demo pool scored by a random tiny CLIP (tag seed: real embeddings, scores
    that know nothing), deduplicated, annotated against the demo suite's class names and
    clustered with the suite's training images as the image-based target; plus tag `ranker`,
    the seed's rows with scores that follow the truth through noise: a stand-in for a filter
    network that learned what a matching caption is (the dfn recipe ranks by it)."""
    from curate.annotate.run import annotate_pool
    from curate.cluster.run import ClusterSettings, run_cluster
    from curate.dedup.run import DedupSettings, run_dedup
    from curate.eval_suite.demo import build_demo_suite
    from curate.score.embed import image_embedder

    root = tmp_path_factory.mktemp("lab")
    pool = scored_copy(pool_dir, root)
    layout = Pool(pool)
    kinds = dict(zip(*pq.read_table(demo_dir / "truth.parquet", columns=["uid", "kind"]).to_pydict().values()))
    rng = np.random.default_rng(0)
    for shard in layout.scored_shards("seed"):
        table = pq.read_table(layout.scores_parquet("seed", shard))
        matching = np.array([kinds[u] not in NOISY_CAPTION_KINDS for u in table["uid"].to_pylist()])
        score = pa.array((0.3 * matching + rng.normal(0, 0.1, len(matching))).astype(np.float32))
        layout.scores_dir(RANKER).mkdir(parents=True, exist_ok=True)
        pq.write_table(table.set_column(table.schema.get_field_index("clip_score"), "clip_score", score),
                       layout.scores_parquet(RANKER, shard))
    run_dedup(pool, DedupSettings(scores="seed", method="exact", tag="exact"))
    suite = root / "suite"
    build_demo_suite(suite, demo_dir, images=24)
    annotate_pool(pool, classes=suite, progress=False)
    run_cluster(pool, ClusterSettings(scores="seed", near=str(suite), progress=False),
                embed_images=image_embedder(pool, "seed"))
    return pool, demo_dir / "truth.parquet"


# What a user passes on these pools: the dfn recipe's ranker tag, and bars for the random
# seed's scores, which never reach LAION's ViT-B/32 cosine (LAION's quantile instead) nor
# score_threshold's default.
PARAMS = {"laion": {"fraction": 0.5}, "dfn": {"ranker": RANKER}, "score_threshold": {"min_score": 0.0}}


def _run(pool, recipe: str, **kw):
    """`curate filter --recipe` as a user would, with the values a recipe cannot default
    (a share for the top-k recipes without one, PARAMS)."""
    chosen = load_recipe(recipe)
    params = PARAMS.get(recipe, {})
    top = "40%" if chosen.defaults.get("fraction", 0) is None and "count" in chosen.defaults else None
    return run_filter(pool, recipe, recipe=recipe, scores="seed", top=top, params=params, overwrite=True, **kw)


def test_every_recipe_keeps_a_share_and_its_precision_is_measured(lab):
    pool, truth = lab
    quality = {}
    for recipe in list_recipes():
        _run(pool, recipe)
        q = quality[recipe] = subset_quality(pool, recipe, truth)
        assert 0 < q["kept_share"] <= 1, (recipe, q)
        assert q["judged"] == q["candidates"] and q["judged_kept"] == q["kept"], (recipe, q)  # all in truth
    base = quality["clip_top"]["base_rate"]
    assert 0.6 < base < 0.9 and all(q["base_rate"] == base for q in quality.values())  # the same candidates
    # Ranked by a network that tells matching captions apart, the top-k cut is far cleaner
    # than the pool; ranked by the random seed, it is not.
    assert quality["dfn"]["precision"] > base + 0.15
    assert abs(quality["clip_top"]["precision"] - base) < 0.1
    # The caption rules drop the demo's generic alt text ("IMG_0231.jpg", "click here").
    assert quality["basic"]["precision"] > base and quality["caption_rules"]["precision"] > base
    assert quality["clip_top"]["kept_share"] == pytest.approx(0.3, abs=0.01)


def test_filter_prints_the_truth_line(lab):
    pool, truth = lab
    done = run_curate("filter", pool, "--name", "cli", "--recipe", "dfn", "--scores", "seed", "--param",
                      f"ranker={RANKER}", "--truth", truth)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    q = subset_quality(pool, "cli", truth)
    assert line.startswith(f"truth: kept {q['kept']} of {q['candidates']} candidates")
    assert f"precision {q['precision']:.3f}" in line and f"against {q['base_rate']:.3f}" in line


def test_dfn_ranks_by_its_ranker_and_a_missing_one_is_one_line(lab):
    pool, _ = lab
    kept = set(pq.read_table(_run(pool, "dfn").parquet)["uid"].to_pylist())
    ranker = {r["uid"]: r["clip_score"] for s in Pool(pool).scored_shards(RANKER)
              for r in pq.read_table(Pool(pool).scores_parquet(RANKER, s), columns=["uid", "clip_score"]).to_pylist()}
    ranked = sorted(ranker, key=lambda u: (-ranker[u], u))
    assert kept == set(ranked[:round(0.3 * len(ranked))])
    done = run_curate("filter", pool, "--name", "x", "--recipe", "dfn", "--scores", "seed")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "scores tag 'dfn', which the pool lacks: run `curate score POOL --checkpoint RUN --tag dfn`" in done.stderr


def test_list_shows_parameters_and_needs(tmp_path):
    done = run_curate("filter", "--list")
    assert done.returncode == 0, done.stderr
    for name in list_recipes():
        assert f"{name}  (" in done.stdout
    one = run_curate("filter", "--recipe", "metaclip", "--list")
    assert one.stdout.splitlines()[0].startswith("metaclip  (")
    assert "    t = 50  " in one.stdout and "    seed = 0  " in one.stdout
    assert "annotations.entry_ids  (curate annotate POOL)" in one.stdout and "basic" not in one.stdout
    pool = make_pool(tmp_path / "pool")
    marked = run_curate("filter", pool.path, "--recipe", "semdedup", "--list")
    assert "clusters.semdedup_similarity  (curate cluster POOL --scores TAG)  [missing]" in marked.stdout


@pytest.mark.parametrize("recipe,needs,stage", [
    ("basic", "annotations.caption_language", "curate annotate POOL"),
    ("metaclip", "annotations.entry_ids", "curate annotate POOL"),
    ("semdedup", "clusters.semdedup_similarity", "curate cluster POOL --scores TAG"),
    ("image_based", "clusters.target_hits", "curate cluster POOL --scores TAG --near SUITE_OR_FOLDER"),
])
def test_a_missing_column_fails_in_one_line_naming_the_stage(tmp_path, recipe, needs, stage):
    pool = make_pool(tmp_path / "pool")
    done = run_curate("filter", pool.path, "--name", "x", "--recipe", recipe)
    assert done.returncode == 2
    assert done.stderr.strip() == f"curate: error: recipe {recipe} needs {needs}: run `{stage}`"
    assert not (pool.path / "subsets").exists()


def test_a_users_recipe_declares_its_needs_the_same_way(tmp_path):
    pool = make_pool(tmp_path / "pool")
    recipe = tmp_path / "mine.sql"
    recipe.write_text("-- Keep the samples my stage liked.\n-- @param bar = 0.5  lowest liking kept\n"
                      "-- @needs annotations.liking  my-stage POOL\n"
                      "SELECT c.uid FROM candidates c JOIN annotations a USING (uid) WHERE a.liking >= $bar\n")
    done = run_curate("filter", pool.path, "--name", "x", "--recipe", recipe)
    assert done.stderr.strip() == "curate: error: recipe mine needs annotations.liking: run `my-stage POOL`"
    listed = run_curate("filter", "--recipe", recipe, "--list")
    assert "Keep the samples my stage liked." in listed.stdout and "bar = 0.5  lowest liking kept" in listed.stdout
    # the stage ran: the recipe runs
    uids = [s.uid for s in pool.ok]
    Pool(pool.path).annotations_dir.mkdir()
    pq.write_table(pa.table({"uid": uids, "liking": [float(i % 2) for i in range(len(uids))]}),
                   Pool(pool.path).annotations_parquet(0))
    kept = pq.read_table(run_filter(pool.path, "x", recipe=str(recipe)).parquet)["uid"].to_pylist()
    assert kept == sorted(u for i, u in enumerate(uids) if i % 2)
