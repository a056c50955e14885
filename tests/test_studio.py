"""The Studio's pure functions (selavi_core.studio, selavi_core.studio.montage) on a small real run.

Every number is checked against an independent computation (pandas crosstabs, scikit-learn,
scipy, brute-force numpy), never against a hard-coded value.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from selavi_core.cli import main
from selavi_core.config import StudioSpec
from selavi_core.media.preview import PreviewIndex
from selavi_core.runs.run import Run
from selavi_core.studio import cluster_flow, contingency, head_agreement, open_run
from selavi_core.studio.mapping import compute_map, load_map, map_frame, stratified_sample
from selavi_core.studio.media import read_poster
from selavi_core.studio.montage import cluster_montage, render_montage
from selavi_core.studio.runs import run_refs
from selavi_core.studio.similar import similar_clips


@pytest.fixture(scope="module")
def sr(studio_run):
    return open_run(studio_run[1])


@pytest.fixture(scope="module")
def frame(studio_run) -> pd.DataFrame:
    """Independent view of the run: one row per clip with label and per-head columns, via pandas only."""
    catalog_dir, run_dir = studio_run
    run = Run(run_dir)
    cat = pd.read_parquet(catalog_dir / "clips.parquet").set_index("clip_id").loc[run.clip_ids].reset_index()
    df = pd.DataFrame({"clip_id": cat["clip_id"], "label": cat["label"]})
    for kind in ("joint", "video", "audio"):
        a = np.load(run_dir / "assignments" / f"{kind}.npy")
        for h in range(a.shape[1]):
            df[f"{kind}{h}"] = a[:, h]
    conf = np.load(run_dir / "assignments" / "confidence.npy")
    for h in range(conf.shape[1]):
        df[f"conf{h}"] = conf[:, h]
    return df


def test_cluster_index_matches_pandas(sr, frame):
    for h in range(sr.heads):
        idx = sr.cluster_index(h)
        col = frame[f"joint{h}"]
        sizes = col.value_counts().reindex(range(sr.k), fill_value=0)
        assert idx["size"].tolist() == sizes.tolist()
        assert idx["share"].sum() == pytest.approx(1.0)
        agree = (frame[f"video{h}"] == col) & (frame[f"audio{h}"] == col)
        expected_av = agree.groupby(col).mean()
        expected_conf = frame[f"conf{h}"].groupby(col).mean()
        labelled = frame.dropna(subset=["label"])
        ct = pd.crosstab(labelled[f"joint{h}"], labelled["label"])
        for c in range(sr.k):
            if sizes[c] == 0:
                assert np.isnan(idx.loc[c, "av_agreement"])
                continue
            assert idx.loc[c, "av_agreement"] == pytest.approx(expected_av[c])
            assert idx.loc[c, "mean_confidence"] == pytest.approx(expected_conf[c], rel=1e-6)
            counts = ct.loc[c]
            assert idx.loc[c, "labelled"] == counts.sum()
            assert idx.loc[c, "purity"] == pytest.approx(counts.max() / counts.sum())
            assert idx.loc[c, "majority"] == counts.idxmax()
            p = counts[counts > 0] / counts.sum()
            assert idx.loc[c, "entropy"] == pytest.approx(float(-(p * np.log2(p)).sum()), abs=1e-12)
        # the prior column is the head's prior, sorted and matched to clusters by size rank
        prior = np.sort(np.asarray(sr.run.priors[h]) / np.sum(sr.run.priors[h]))[::-1]
        by_size = idx.sort_values("size", ascending=False, kind="stable")["prior"].to_numpy()
        assert np.allclose(by_size, prior)


def test_members_are_ordered_by_confidence_and_paged(sr, frame):
    h = 1
    for c in range(sr.k):
        members = frame.index[frame[f"joint{h}"] == c]
        n_pages = sr.pages(h, c, page_size=5)
        assert n_pages == max(1, -(-len(members) // 5))
        most = np.concatenate([sr.members(h, c, order="most", page=p, page_size=5) for p in range(n_pages)])
        least = np.concatenate([sr.members(h, c, order="least", page=p, page_size=5) for p in range(n_pages)])
        assert sorted(most.tolist()) == sorted(members.tolist())  # every member exactly once
        assert sorted(least.tolist()) == sorted(members.tolist())
        conf = frame[f"conf{h}"].to_numpy()
        assert np.all(np.diff(conf[most]) <= 0)
        assert np.all(np.diff(conf[least]) >= 0)
        assert list(least) == list(most[::-1])
    table = sr.member_table(h, 0, page_size=3)
    assert list(table["clip_id"]) == [frame.loc[r, "clip_id"] for r in table["row"]]
    assert np.allclose(table["confidence"], frame.loc[table["row"], f"conf{h}"])


def test_ground_truth_histogram(sr, frame):
    h, c = 0, int(sr.sizes(0).argmax())
    hist = sr.cluster_histogram(h, c)
    expected = frame[(frame["joint0"] == c) & frame["label"].notna()]["label"].value_counts()
    assert dict(zip(hist["label"], hist["count"], strict=True)) == expected.to_dict()
    assert list(hist["count"]) == sorted(hist["count"], reverse=True)


def test_head_agreement_matches_sklearn(sr, frame):
    agree = head_agreement(sr)
    nmi, ari = agree["nmi"], agree["ari"]
    assert list(nmi.index) == [f"head {h}" for h in range(sr.heads)] + ["ground truth"]
    for i in range(sr.heads):
        for j in range(sr.heads):
            a, b = frame[f"joint{i}"], frame[f"joint{j}"]
            assert nmi.iloc[i, j] == pytest.approx(normalized_mutual_info_score(a, b), abs=1e-9)
            assert ari.iloc[i, j] == pytest.approx(adjusted_rand_score(a, b), abs=1e-9)
    lab = frame.dropna(subset=["label"])
    for h in range(sr.heads):
        assert nmi.loc[f"head {h}", "ground truth"] == pytest.approx(
            normalized_mutual_info_score(lab["label"], lab[f"joint{h}"]), abs=1e-9
        )
    assert 0 < nmi.iloc[0, 1] < 1  # the fixture's heads disagree a little: the check is not vacuous


def test_contingency_is_a_reordering_of_the_crosstab(sr, frame):
    a, b = 0, 2
    ct = contingency(sr, a, b)
    cross = pd.crosstab(frame[f"joint{a}"], frame[f"joint{b}"])
    assert ct.table.sum() == len(frame)
    for i, r in enumerate(ct.rows):
        for j, c in enumerate(ct.cols):
            assert ct.table[i, j] == cross.loc[r, c]
    m = cross.to_numpy()
    ri, ci = linear_sum_assignment(m, maximize=True)
    assert ct.matched == pytest.approx(m[ri, ci].sum() / m.sum())
    # the matched cells are on the diagonal, strongest first
    diag = np.diag(ct.table)[: min(ct.table.shape)]
    assert diag.sum() == m[ri, ci].sum()
    assert list(diag) == sorted(diag, reverse=True)
    same = contingency(sr, 1, 1)
    assert same.matched == 1.0 and np.count_nonzero(same.table - np.diag(np.diag(same.table))) == 0


def test_cluster_flow(sr, frame):
    a, b = 1, 0
    for c in range(sr.k):
        flow = cluster_flow(sr, a, c, b)
        members = frame[frame[f"joint{a}"] == c]
        expected = members[f"joint{b}"].value_counts()
        assert dict(zip(flow["cluster"], flow["count"], strict=True)) == expected.to_dict()
        if len(members):
            assert flow["share"].sum() == pytest.approx(1.0)
        b_sizes = frame[f"joint{b}"].value_counts()
        assert np.allclose(flow["of_b"], flow["count"] / b_sizes.loc[flow["cluster"]].to_numpy())


def test_size_profile_and_recommendation(sr, frame):
    prof = sr.size_profile(0)
    assert np.allclose(prof["share"], np.sort(frame["joint0"].value_counts().reindex(range(sr.k), fill_value=0))[::-1]
                       / len(frame))  # fmt: skip
    assert prof["prior"].sum() == pytest.approx(1.0)
    choice = sr.recommend_head()
    # independent: A/V agreement and mean NMI to the other heads, ranked; the best mean rank wins
    av = np.array([((frame[f"video{h}"] == frame[f"joint{h}"]) & (frame[f"audio{h}"] == frame[f"joint{h}"])).mean()
                   for h in range(sr.heads)])  # fmt: skip
    cons = np.array([np.mean([normalized_mutual_info_score(frame[f"joint{h}"], frame[f"joint{o}"])
                              for o in range(sr.heads) if o != h]) for h in range(sr.heads)])  # fmt: skip
    score = (pd.Series(av).rank() + pd.Series(cons).rank()).to_numpy()
    assert score[choice.head] == score.max()
    assert f"head {choice.head}" in choice.reason and "without ground truth" in choice.reason
    assert choice.table.loc[choice.head, "av_agreement"] == pytest.approx(av[choice.head])


def test_stratified_sample_keeps_every_cluster():
    labels = np.repeat(np.arange(6), [1000, 500, 100, 10, 3, 1])
    rows = stratified_sample(labels, 807, seed=3)  # half of the 1614 clips
    assert len(np.unique(rows)) == len(rows) and np.all(np.diff(rows) > 0)
    counts = np.bincount(labels[rows], minlength=6)
    assert counts.tolist() == [500, 250, 50, 5, 1, 1]  # each cluster halved, none dropped
    assert np.array_equal(stratified_sample(labels, 10_000), np.arange(len(labels)))


def test_map_is_computed_once_and_cached(studio_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(studio_run[1], run_dir)
    shutil.rmtree(run_dir / "map", ignore_errors=True)  # another test may have mapped the shared run already
    local = open_run(run_dir)
    seen = []
    res = compute_map(local, progress=lambda f, m: seen.append(f))
    assert res.coords.shape == (local.n, 2) and np.isfinite(res.coords).all()
    assert not res.sampled and not res.cached
    assert np.array_equal(res.knn[:, 0], np.arange(local.n))  # self first in the k-NN graph
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert (run_dir / "map" / "umap.npy").is_file()
    again = compute_map(open_run(run_dir))
    assert again.cached and np.array_equal(again.coords, res.coords)
    # points of the same class sit closer together than points of different classes
    labels = local.catalog["label"].fillna("?").astype(str).to_numpy()
    d = np.linalg.norm(res.coords[:, None] - res.coords[None], axis=-1)
    same = labels[:, None] == labels[None]
    assert d[same].mean() < d[~same].mean()
    df = map_frame(local, res, 0, "ground truth")
    assert list(df["clip_id"]) == list(local.clip_ids) and "label" in df
    # a sampled map when the run is larger than the limit
    small = StudioSpec(map_max_points=20)
    sampled = compute_map(local, spec=small, stratify_head=0, force=True)
    assert sampled.sampled and len(sampled.rows) <= 20 + local.k and sampled.stratified_by == 0
    assert set(local.head(0).joint[sampled.rows]) == set(local.head(0).joint)
    assert load_map(local, small).cached


def test_similar_clips_match_brute_force(sr):
    v = np.load(sr.run.dir / "features" / "video.npy").astype(np.float32)
    a = np.load(sr.run.dir / "features" / "audio.npy").astype(np.float32)
    emb = np.concatenate(
        [v / np.linalg.norm(v, axis=1, keepdims=True), a / np.linalg.norm(a, axis=1, keepdims=True)], 1
    )
    emb /= np.sqrt(2)
    for row in (0, 17):
        sims = emb @ emb[row]
        sims[row] = -np.inf
        expected = np.argsort(-sims, kind="stable")[:5]
        got = similar_clips(sr, row, k=5, head=0)
        assert row not in got["row"].tolist()
        assert np.allclose(got["similarity"], sims[expected], atol=2e-3)
        assert set(got["row"][:3]) == set(expected[:3])
        assert list(got["cluster"]) == list(sr.head(0).joint[got["row"]])
    audio_only = similar_clips(sr, 0, k=3, kind="audio")
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    s = an @ an[0]
    s[0] = -np.inf
    assert audio_only["row"].iloc[0] == int(np.argmax(s))


def test_preview_lookup_and_placeholders(studio_run, tmp_path):
    catalog_dir, _ = studio_run
    cat = tmp_path / "catalog"
    shutil.copytree(catalog_dir, cat)
    index = pd.read_parquet(cat / "previews" / "index.parquet")
    ok = PreviewIndex(cat).lookup(index["clip_id"][0])
    assert ok.playable and ok.mp4.is_file() and read_poster(ok)[:2] == b"\xff\xd8"  # a JPEG
    # break things: a missing file, a corrupt poster, a failed preview, a clip not in the index
    index = index.astype(object)
    first, second, third = index["clip_id"][:3]
    (cat / "previews" / "gone.mp4").unlink(missing_ok=True)
    index.loc[0, "mp4"] = "gone.mp4"
    (cat / "previews" / "bad.jpg").write_bytes(b"not a jpeg at all")
    index.loc[1, "poster"] = "bad.jpg"
    index.loc[2, ["mp4", "poster", "error"]] = [None, None, "no video stream"]
    index = index[index["clip_id"] != index["clip_id"].iloc[-1]]
    index.to_parquet(cat / "previews" / "index.parquet", index=False)
    pi = PreviewIndex(cat)
    gone = pi.lookup(first)
    assert gone.mp4 is None and "missing" in gone.problem
    bad_poster = pi.lookup(second)
    assert bad_poster.playable and read_poster(bad_poster) is None
    failed = pi.lookup(third)
    assert not failed.playable and "no video stream" in failed.problem
    absent = pi.lookup(pd.read_parquet(catalog_dir / "previews" / "index.parquet")["clip_id"].iloc[-1])
    assert not absent.playable and "selavi previews" in absent.problem
    (cat / "previews" / "index.parquet").write_bytes(b"garbage")
    assert not PreviewIndex(cat).lookup(first).playable  # an unreadable index is no index, not a crash


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        out = {"vcodec": v.codec_context.name, "pix_fmt": v.codec_context.pix_fmt, "w": v.width, "h": v.height,
               "acodec": c.streams.audio[0].codec_context.name if c.streams.audio else None,
               "duration": float(c.duration) / av.time_base}  # fmt: skip
        out["frames"] = sum(1 for _ in c.decode(video=0))
    return out


def test_montage_renders_a_browser_ready_grid(sr, tmp_path):
    videos = [sr.media(r).mp4 for r in range(3)]
    out = render_montage(videos, tmp_path / "m.mp4", grid=(2, 2), seconds=1.0, cell=(96, 64), fps=10)
    info = _probe(out)
    assert (info["vcodec"], info["pix_fmt"], info["acodec"]) == ("h264", "yuv420p", "aac")
    assert (info["w"], info["h"]) == (192, 128)
    assert info["duration"] == pytest.approx(1.0, abs=0.15) and info["frames"] >= 8
    with open(out, "rb") as f:  # +faststart: the moov atom precedes the media data
        head = f.read(4096)
    assert head.find(b"moov") != -1 and (head.find(b"mdat") == -1 or head.find(b"moov") < head.find(b"mdat"))


def test_cluster_montage_is_cached(studio_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(studio_run[1], run_dir)
    local = open_run(run_dir)
    spec = StudioSpec(montage_grid=(2, 1), montage_seconds=0.6, montage_cell=(64, 48))
    c = int(local.sizes(0).argmax())
    assert cluster_montage(local, 0, c, spec, render=False) is None
    path = cluster_montage(local, 0, c, spec)
    assert path.is_file() and path.parent == run_dir / "montages"
    mtime = path.stat().st_mtime_ns
    assert cluster_montage(local, 0, c, spec, render=False) == path
    assert cluster_montage(local, 0, c, spec).stat().st_mtime_ns == mtime  # not rendered again


def test_run_names_are_unique(tmp_path):
    refs = run_refs([tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "b" / "run"])
    names = [r.name for r in refs]
    assert names[0] == "run" and len(set(names)) == 3


def test_app_command_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["app", str(tmp_path), "--port", "9"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_app_command_passes_its_store_to_the_studio(tmp_path, store_backend, monkeypatch, capsys):
    """`selavi app RUN --store URL` opens the store first (a bad URL fails here, in one line, password hidden),
    then hands the absolute URL to the Studio in STORE_ENV, never on its command line."""
    import subprocess
    from types import SimpleNamespace

    from label_fixtures import make_label_run

    from selavi_core.commands import app as app_cmd
    from selavi_core.labels import LabelStore
    from selavi_core.studio.runs import STORE_ENV

    started: list[dict] = []

    class FakePopen:  # the Streamlit process, not started
        def __init__(self, cmd, env, cwd):
            started.append({"cmd": cmd, "env": env})

        def wait(self):
            return 0

    monkeypatch.setattr(
        app_cmd, "subprocess", SimpleNamespace(Popen=FakePopen, TimeoutExpired=subprocess.TimeoutExpired)
    )
    monkeypatch.setenv(STORE_ENV, "sqlite:///somewhere/else.sqlite")  # an inherited value never wins over --store
    monkeypatch.chdir(tmp_path)
    run_dir = make_label_run(tmp_path)
    if store_backend.url is None:
        given, expected = "team.sqlite", f"sqlite:///{tmp_path / 'team.sqlite'}"  # relative: made absolute
    else:
        given = expected = store_backend.url.replace("://selavi@", "://selavi:pw-x9@")
    assert main(["app", str(run_dir), "--port", "8599", "--store", given]) == 0
    [call] = started
    assert call["env"][STORE_ENV] == expected and not any("pw-x9" in a or "team" in a for a in call["cmd"])
    assert "pw-x9" not in "".join(capsys.readouterr())
    assert LabelStore.open(run_dir, store=expected).version() == 0 and not (run_dir / "labels.sqlite").exists()
    # without --store the Studio uses each run's own file, whatever the environment held
    assert main(["app", str(run_dir), "--port", "8599"]) == 0
    assert STORE_ENV not in started[-1]["env"]
    # a store that cannot be opened stops `selavi app` before the Studio starts
    bad = "mysql+nosuchdriver://u:pw-x9@h/db" if store_backend.url is None else expected.replace("/t", "/missing", 1)
    assert main(["app", str(run_dir), "--port", "8599", "--store", bad]) == 2
    err = capsys.readouterr().err
    assert "cannot" in err and "label store" in err and "pw-x9" not in err and "***" in err and len(started) == 2
