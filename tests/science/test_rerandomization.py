"""science.rerandomization against independent references: exhaustive NumPy enumeration (itertools),
scipy.stats.permutation_test, the chi^2_d law and Morgan-Rubin's variance factor, a coverage
simulation, device-count independence, bad input and the ``jaxaccel rerandomize`` job."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from science import rerandomization as rr


def _all_assignments(n, nt):
    w = np.zeros((math.comb(n, nt), n), bool)
    for k, c in enumerate(itertools.combinations(range(n), nt)):
        w[k, list(c)] = True
    return w


def _mahalanobis_ref(x, w):
    """Morgan-Rubin's M for each row of w, from its definition (float64, no whitening)."""
    n = x.shape[0]
    nt = w.sum(1)
    diff = np.stack([x[r].mean(0) - x[~r].mean(0) for r in w])
    s_inv = np.linalg.inv(np.cov(x.T).reshape(x.shape[1], x.shape[1]))
    return np.einsum("kd,de,ke->k", diff, s_inv, diff) / (1 / nt + 1 / (n - nt))


def _dm(y, w):
    return y[w].mean() - y[~w].mean()


def test_enumeration_is_lexicographic_and_balance_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3))
    pool = rr.draw_pool(jax.random.key(0), x, 5, method="exact", chunk_size=64)
    ref = _all_assignments(12, 5)
    assert pool.exact and pool.size == pool.n_candidates == len(ref)
    np.testing.assert_array_equal(pool.assignments(), ref)
    np.testing.assert_allclose(pool.balance, _mahalanobis_ref(x, ref), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("n", [16, 20])
def test_exact_p_values_equal_exhaustive_enumeration(n):
    """Rerandomized design (accept M below a threshold): our enumerated pool's p-values equal a
    direct NumPy enumeration of every acceptable assignment, for several nulls and alternatives."""
    rng = np.random.default_rng(n)
    nt = n // 2
    x = rng.normal(size=(n, 3))
    allw = _all_assignments(n, nt)
    m = _mahalanobis_ref(x, allw)
    srt = np.sort(m)
    threshold = 0.5 * (srt[len(srt) // 4] + srt[len(srt) // 4 + 1])  # ~25%, away from any tie
    acceptable = allw[m <= threshold]
    pool = rr.draw_pool(jax.random.key(1), x, nt, threshold=threshold, method="exact")
    assert pool.size == len(acceptable)
    w_obs = acceptable[7]
    y = rng.normal(size=n) + 0.9 * w_obs
    for tau in (0.0, 0.5, -0.3):
        y0 = y - tau * w_obs
        ref_stats = np.array([_dm(y0 + tau * a, a) for a in acceptable])
        obs = _dm(y, w_obs)
        for alt, count in (
            ("two-sided", lambda s, o, t=tau: np.sum(np.abs(s - t) >= np.abs(o - t) - 1e-9)),
            ("greater", lambda s, o: np.sum(s >= o - 1e-9)),
            ("less", lambda s, o: np.sum(s <= o + 1e-9)),
        ):
            res = rr.randomization_test(pool, y, w_obs, null_effect=tau, alternative=alt)
            assert res.p_value == count(ref_stats, obs) / len(acceptable), (tau, alt)
            assert res.statistic == pytest.approx(obs, abs=1e-9)


def test_user_statistic_equals_enumeration():
    rng = np.random.default_rng(5)
    n, nt = 16, 8
    x = rng.normal(size=(n, 2))
    pool = rr.draw_pool(jax.random.key(0), x, nt, method="exact")
    w_obs = pool.assignments(100, 101)[0]
    y = rng.exponential(size=n) + 0.7 * w_obs

    def rank_sum(yy, ww):
        ranks = jnp.argsort(jnp.argsort(yy)).astype(jnp.float32)
        return jnp.where(ww, ranks, 0.0).sum()

    res = rr.randomization_test(pool, y, w_obs, statistic=rank_sum, alternative="greater")
    ranks = stats.rankdata(y) - 1
    ref = np.array([ranks[a].sum() for a in pool.assignments()])
    assert res.p_value == np.mean(ref >= ranks[w_obs].sum() - 1e-6)
    # and the Wilcoxon-Mann-Whitney exact test agrees (no ties: continuous y)
    mw = stats.mannwhitneyu(y[w_obs], y[~w_obs], alternative="greater", method="exact")
    assert res.p_value == pytest.approx(mw.pvalue, rel=1e-9)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_complete_randomization_matches_scipy_permutation_test(alternative):
    rng = np.random.default_rng(11)
    n, nt = 16, 8
    pool = rr.draw_pool(jax.random.key(2), rng.normal(size=(n, 2)), nt, method="exact")
    for outcome in ("continuous", "binary"):
        w = np.zeros(n, bool)
        w[rng.choice(n, nt, replace=False)] = True
        y = (
            rng.normal(size=n) + 0.8 * w
            if outcome == "continuous"
            else (rng.random(n) < 0.3 + 0.4 * w)
        )
        y = y.astype(float)
        ref = stats.permutation_test(
            (y[w], y[~w]),
            lambda a, b, axis: a.mean(axis) - b.mean(axis),
            permutation_type="independent",
            n_resamples=np.inf,
            alternative=alternative,
        )
        res = rr.randomization_test(pool, y, w, alternative=alternative)
        assert res.p_value == pytest.approx(ref.pvalue, rel=1e-12), outcome


def test_interval_endpoints_are_where_the_exact_p_value_crosses_alpha():
    rng = np.random.default_rng(4)
    n, nt = 14, 7
    x = rng.normal(size=(n, 2))
    pool = rr.draw_pool(jax.random.key(3), x, nt, method="exact")
    w = pool.assignments(1234, 1235)[0]
    y = rng.normal(size=n) + 1.0 * w
    iv = rr.fiducial_interval(pool, y, w, alpha=0.1)
    allw = pool.assignments()

    def p_ref(tau):
        y0 = y - tau * w
        s = np.array([_dm(y0, a) for a in allw])
        return np.mean(np.abs(s) >= abs(_dm(y0, w)) - 1e-9)

    assert iv.low < iv.estimate < iv.high and iv.connected
    eps = 1e-4
    assert p_ref(iv.low + eps) > 0.1 >= p_ref(iv.low - eps)
    assert p_ref(iv.high - eps) > 0.1 >= p_ref(iv.high + eps)


@pytest.mark.parametrize("rng_name", ["hash", "threefry"])
def test_monte_carlo_draws_are_uniform_over_subsets(rng_name):
    n, nt = 8, 3  # 56 subsets
    x = np.random.default_rng(0).normal(size=(n, 2))
    pool = rr.draw_pool(
        jax.random.key(7), x, nt, method="monte_carlo", n_accepted=56 * 800, rng=rng_name
    )
    a = pool.assignments()
    assert (a.sum(1) == nt).all()
    codes = a.astype(np.int64) @ (1 << np.arange(n))
    _, counts = np.unique(codes, return_counts=True)
    assert counts.size == 56
    assert stats.chisquare(counts).pvalue > 1e-3
    # unit inclusion and pairwise inclusion probabilities
    np.testing.assert_allclose(a.mean(0), nt / n, atol=0.01)
    pair = (a[:, :, None] & a[:, None, :]).mean(0)[np.triu_indices(n, 1)]
    np.testing.assert_allclose(pair, nt * (nt - 1) / (n * (n - 1)), atol=0.01)


def test_acceptance_rate_and_balance_follow_the_chi2_law():
    rng = np.random.default_rng(8)
    n, d = 400, 4
    x = rng.normal(size=(n, d))
    cr = rr.draw_pool(jax.random.key(4), x, n // 2, n_accepted=20_000)
    assert stats.kstest(cr.balance, stats.chi2(d).cdf).pvalue > 1e-3
    for p in (0.5, 0.1):
        pool = rr.draw_pool(
            jax.random.key(5), x, n // 2, accept_prob=p, threshold_rule="chi2", n_accepted=4000
        )
        se = math.sqrt(p * (1 - p) / pool.n_candidates)
        assert abs(pool.acceptance_rate - p) < 4 * se + 0.01 * p, (p, pool.acceptance_rate)
        # Morgan-Rubin: each covariate mean difference's variance shrinks by v_a
        rows = rr.balance_table(pool, x)
        v_a = float(rr.variance_reduction(p, d))
        for r in rows:
            assert r.variance_ratio == pytest.approx(v_a, rel=0.15), (p, r)


def test_interval_coverage_is_nominal():
    rng = np.random.default_rng(9)
    n, nt, tau = 40, 20, 1.5
    x = rng.normal(size=(n, 2))
    pool = rr.draw_pool(jax.random.key(6), x, nt, accept_prob=0.2, n_accepted=1000)
    y0 = x @ np.array([1.0, -0.5]) + rng.normal(size=n)
    hits, reps = 0, 160
    for s in range(reps):
        w = pool.assignments(s, s + 1)[0]
        iv = rr.fiducial_interval(pool, y0 + tau * w, w, alpha=0.1, tol=1e-3)
        hits += iv.low <= tau <= iv.high
    # nominal 0.9; binomial sd ~0.024 at 160 reps
    assert 0.82 <= hits / reps <= 0.97, hits / reps


def test_pool_depends_on_the_key_only_not_on_device_count(tmp_path):
    script = textwrap.dedent(
        """
        import jax, numpy as np
        from science import rerandomization as rr
        x = np.random.default_rng(1).normal(size=(50, 3))
        out = {}
        for d in (1, 3, 8):
            p = rr.draw_pool(jax.random.key(3), x, 20, accept_prob=0.3, n_accepted=700,
                             chunk_size=64, devices=jax.devices()[:d], calibration=2000)
            out[d] = p
        for d in (3, 8):
            assert (out[d].packed == out[1].packed).all(), d
            assert out[d].n_candidates == out[1].n_candidates
            assert out[d].threshold == out[1].threshold
        print("OK", len(jax.devices()), out[1].size)
        """
    )
    env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[:3] == ["OK", "8", "700"]


def test_same_key_same_pool_and_save_load(tmp_path):
    x = np.random.default_rng(2).normal(size=(30, 2))
    a = rr.draw_pool(jax.random.key(0), x, 10, threshold=2.0, n_accepted=300)
    b = rr.draw_pool(jax.random.key(0), x, 10, threshold=2.0, n_accepted=300)
    c = rr.draw_pool(jax.random.key(1), x, 10, threshold=2.0, n_accepted=300)
    assert (a.packed == b.packed).all() and not (a.packed == c.packed).all()
    assert (a.balance <= 2.0).all()
    np.testing.assert_allclose(a.balance, _mahalanobis_ref(x, a.assignments()), rtol=1e-4)
    loaded = rr.Pool.load(a.save(tmp_path / "pool.npz"))
    assert (loaded.packed == a.packed).all() and (loaded.balance == a.balance).all()
    assert (loaded.threshold, loaded.n_candidates, loaded.exact) == (2.0, a.n_candidates, False)


def test_other_balance_functions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3)) * np.array([1.0, 10.0, 0.1])
    ref = _all_assignments(12, 6)
    sd = x.std(0, ddof=1) * math.sqrt(12 / 36)
    smd = np.stack([(x[r].mean(0) - x[~r].mean(0)) for r in ref]) / sd
    for balance, expect in (
        ("standardized", (smd**2).sum(1)),
        ("max_smd", np.abs(smd).max(1)),
        (lambda s: jnp.abs(s).sum(), np.abs(smd).sum(1)),
    ):
        pool = rr.draw_pool(jax.random.key(0), x, 6, method="exact", balance=balance)
        np.testing.assert_allclose(pool.balance, expect, rtol=1e-4, atol=1e-5)


def test_choose_threshold_trades_variance_for_pool_size():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(60, 3))
    rows, rec = rr.choose_threshold(
        jax.random.key(0), x, 30, accept_probs=(1.0, 0.1, 0.01), n_sims=30, pool_size=200
    )
    assert [r.accept_prob for r in rows] == [1.0, 0.1, 0.01]
    vr = [r.variance_reduction for r in rows]
    assert vr[0] == 0 and vr[0] < vr[1] < vr[2] < 0.5
    assert rows[2].estimator_sd < rows[0].estimator_sd
    assert rec in (1.0, 0.1, 0.01)


# ---- bad input: errors name the argument ------------------------------------------------------


def test_bad_input_errors():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    key = jax.random.key(0)
    with pytest.raises(
        rr.RerandomizationError, match="n_treated: expected 1 <= n_treated <= n - 1"
    ):
        rr.draw_pool(key, x, 20)
    with pytest.raises(rr.RerandomizationError, match="n_treated"):
        rr.draw_pool(key, x, 0)
    collinear = np.column_stack([x, x[:, 0] + 2 * x[:, 1]])
    with pytest.raises(rr.RerandomizationError, match=r"singular.*collinear.*ridge"):
        rr.draw_pool(key, collinear, 10)
    ok = rr.draw_pool(key, collinear, 10, ridge=1e-3, n_accepted=50, method="monte_carlo")
    assert np.isfinite(ok.balance).all()
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(rr.RerandomizationError, match=r"NaN.*\['x1'\].*row 3"):
        rr.draw_pool(key, bad, 10)
    with pytest.raises(rr.RerandomizationError, match="threshold: 0.* accepted none"):
        rr.draw_pool(
            key, x, 10, threshold=0.0, n_accepted=10, max_candidates=5000, method="monte_carlo"
        )
    with pytest.raises(rr.RerandomizationError, match="threshold: 0 accepts none of the 184756"):
        rr.draw_pool(key, x, 10, threshold=0.0)
    with pytest.raises(rr.RerandomizationError, match=r"method='exact'.*max_enumerate"):
        rr.draw_pool(key, rng.normal(size=(40, 2)), 20, method="exact")
    with pytest.raises(rr.RerandomizationError, match="constant"):
        rr.draw_pool(key, np.column_stack([x, np.ones(20)]), 10)
    pool = rr.draw_pool(key, x, 10, n_accepted=200, method="monte_carlo")
    w = pool.assignments(0, 1)[0]
    with pytest.raises(rr.RerandomizationError, match="outcome: expected 20 values"):
        rr.randomization_test(pool, np.ones(19), w)
    with pytest.raises(rr.RerandomizationError, match="outcome: 1 non-finite"):
        rr.randomization_test(pool, np.r_[np.ones(19), np.nan], w)
    with pytest.raises(rr.RerandomizationError, match="treatment: 11 treated"):
        rr.randomization_test(pool, np.ones(20), np.r_[w[:-1], True] | np.eye(20, dtype=bool)[0])
    with pytest.raises(rr.RerandomizationError, match="alpha: a pool of 200"):
        rr.fiducial_interval(pool, rng.normal(size=20), w, alpha=0.001)
    small = rr.draw_pool(key, x[:10], 5, threshold=3.0, method="exact")
    outside = np.zeros(10, bool)
    outside[:5] = True
    if not (small.packed == np.packbits(outside)[None]).all(1).any():
        with pytest.raises(rr.RerandomizationError, match="not in the enumerated acceptable set"):
            rr.randomization_test(small, np.ones(10), outside)


# ---- the job ----------------------------------------------------------------------------------


def test_job_on_nsw_and_resume(tmp_path, capsys):
    pytest.importorskip("causaldata")
    config = rr.JOB.load(size="tiny")
    s = rr.JOB.run(config, key=jax.random.key(0), out=tmp_path, progress=False).results
    a = s["analysis"]
    # Dehejia-Wahba NSW sample: 1794.34 difference in 1978 earnings (a classic figure)
    assert a["estimate"] == pytest.approx(1794.34, abs=0.01)
    df, t, y, _ = rr.load_dataset("nsw")
    w = df[t].to_numpy().astype(bool)
    assert a["estimate"] == pytest.approx(_dm(df[y].to_numpy(float), w), rel=1e-9)
    assert 0.0005 <= a["p_value"] <= 0.03 and a["interval"][0] < a["estimate"] < a["interval"][1]
    assert s["design"]["pool_size"] == 2000 and s["observed_balance"]["mahalanobis"] > 0
    for f in (
        "randomization.png",
        "interval.png",
        "balance.png",
        "balance_distribution.png",
        "design.png",
        "balance.md",
        "summary.json",
    ):
        assert (tmp_path / f).stat().st_size > 200, f
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["job"] == "rerandomize" and summary["config"]["n_accepted"] == 2000
    capsys.readouterr()
    # progress on: the rerun says it resumed the finished pool and reads the design table back
    s2 = rr.JOB.run(config, key=jax.random.key(0), out=tmp_path, progress=True).results
    assert "pool: resumed from step 2000" in capsys.readouterr().err
    assert s2["analysis"]["p_value"] == a["p_value"]
    assert s2["threshold_choice"] == s["threshold_choice"]


def test_pool_draw_checkpoint_resumes_to_the_same_pool(tmp_path):
    """A draw cut short (here: its checkpoint after 2 of 5 chunks) resumes to the pool of an
    uninterrupted draw; another key's checkpoint is refused."""
    from jaxaccel import runtime

    x = np.random.default_rng(5).normal(size=(40, 3))
    kw = dict(accept_prob=0.3, n_accepted=600, chunk_size=256, calibration=2000)
    ref = rr.draw_pool(jax.random.key(4), x, 20, **kw)
    folder = tmp_path / "ck"
    # checkpoint_every=0: a save after every chunk; stop after the pool's 2nd save
    saves = []
    real_save = runtime.Checkpointer.save

    def save(self, step, state, **k):
        real_save(self, step, state, **k)
        if self.folder.name == "pool":
            saves.append(step)
            if len(saves) == 2:
                raise KeyboardInterrupt

    runtime.Checkpointer.save = save
    try:
        with pytest.raises(KeyboardInterrupt):
            rr.draw_pool(jax.random.key(4), x, 20, checkpoint=folder, checkpoint_every=0, **kw)
    finally:
        runtime.Checkpointer.save = real_save
    meta = json.loads((folder / "pool" / "checkpoint.json").read_text())["extra"]
    assert 0 < meta["got"] < 600
    again = rr.draw_pool(jax.random.key(4), x, 20, checkpoint=folder, checkpoint_every=0, **kw)
    assert (again.packed == ref.packed).all() and (again.balance == ref.balance).all()
    assert (again.threshold, again.n_candidates) == (ref.threshold, ref.n_candidates)
    with pytest.raises(runtime.CheckpointError, match="different run"):
        rr.draw_pool(jax.random.key(5), x, 20, checkpoint=folder, **kw)


def test_job_on_a_csv_design_only(tmp_path):
    rng = np.random.default_rng(0)
    import pandas as pd

    pd.DataFrame(rng.normal(size=(30, 3)), columns=["a", "b", "c"]).to_csv(
        tmp_path / "u.csv", index=False
    )
    out = tmp_path / "out"
    config = rr.JOB.load(
        size="tiny", overrides={"csv": str(tmp_path / "u.csv"), "n_treated": 12, "accept_prob": 0.2}
    )
    s = rr.JOB.run(config, key=jax.random.key(0), out=out, progress=False).results
    assigned = pd.read_csv(out / "assignment.csv")["assigned"].to_numpy()
    assert assigned.sum() == 12 and "analysis" not in s
    m = rr.Covariates.build(pd.read_csv(tmp_path / "u.csv")[["a", "b", "c"]]).distance(
        assigned[None] == 1
    )
    assert m[0] <= s["design"]["threshold"] * (1 + 1e-5)
    assert json.loads((out / "summary.json").read_text())["covariates"] == ["a", "b", "c"]


@pytest.mark.slow
def test_kill_9_mid_run_resumes_to_the_same_summary(tmp_path):
    """``jaxaccel rerandomize --size tiny`` killed (SIGKILL) right after its first checkpoint save
    (the pool), rerun: the same summary as an uninterrupted run."""
    pytest.importorskip("causaldata")
    exe = os.path.join(os.path.dirname(sys.executable), "jaxaccel")
    base = [exe, "rerandomize", "--size", "tiny", "--no-progress", "--out"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    env = dict(os.environ, JAXACCEL_KILL_AFTER_SAVES="1")
    proc = subprocess.run([*base, str(cut)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (cut / "checkpoint" / "pool" / "checkpoint.json").exists()
    assert not (cut / "summary.json").exists()
    env.pop("JAXACCEL_KILL_AFTER_SAVES")
    for folder in (cut, ref):
        proc = subprocess.run(
            [*base, str(folder)], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = (json.loads((f / "summary.json").read_text()) for f in (ref, cut))
    a.pop("wall_seconds"), b.pop("wall_seconds")
    assert a == b


def test_large_n_pool_pass_matches_numpy():
    """n > 256 reads the packed bytes through per-byte tables: same statistics as NumPy."""
    rng = np.random.default_rng(21)
    n, nt = 301, 120
    x = rng.normal(size=(n, 4))
    pool = rr.draw_pool(jax.random.key(9), x, nt, accept_prob=0.3, n_accepted=3000)
    w = pool.assignments(5, 6)[0]
    y = rng.normal(size=n) * 3 + 0.4 * w
    res = rr.randomization_test(pool, y, w, null_effect=0.2)
    allw = pool.assignments()
    y0 = y - 0.2 * w
    ref = np.array([_dm(y0, a) for a in allw])
    np.testing.assert_allclose(res.distribution, ref + 0.2, atol=1e-4)
    obs = _dm(y0, w)
    count = np.sum(np.abs(ref) >= abs(obs) - 1e-9)
    assert res.p_value == (1 + count) / (len(allw) + 1)
