"""Pools of acceptable randomizations: complete randomization filtered by covariate balance.

How candidates are made (the design for CPUs and accelerators alike). Sorting random keys, the
usual way to draw a random subset, is slow on CPU (XLA's sort is comparator-based). Instead each
batch of ``B`` candidates runs *sequential selection sampling* (Fan, Muller & Rezucha 1962; Knuth's
Algorithm S) along the units, vectorised across the batch: unit ``i`` is treated with probability
``need / (n - i)``, which yields every ``n_t``-subset with equal probability and costs one
comparison per unit and candidate. The uniforms come from a counter-based hash keyed per chunk by
``jax.random`` (two rounds of a 32-bit multiply-xorshift mixer, 24-bit uniforms), about 4x cheaper
on CPU than threefry; ``rng="threefry"`` uses ``jax.random.uniform`` instead. Balance is then one
matrix product ``Z^T W`` of the whitened covariates with the (n, B) batch. Exact enumeration uses
the same scan with the combinatorial number system: candidate ``r`` is the ``r``-th subset in
lexicographic order, unranked unit by unit from a table of binomial coefficients.

Chunk ``c`` always uses ``fold_in(key, c)``, chunks are taken in order and the pool is cut at
``n_accepted``: the pool depends on the key only, not on the chunk count per step or the number of
devices the chunks are sharded over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import runtime

from ._balance import Covariates, RerandomizationError, check_units, reduce_smd

__all__ = [
    "Pool",
    "draw_pool",
    "candidate_runner",
    "MAX_ENUMERATE",
    "ENUMERATE_HARD_LIMIT",
    "acceptance_threshold",
]

MAX_ENUMERATE = 2**24
ENUMERATE_HARD_LIMIT = 2**31 - 1
_M1 = np.uint32(0x21F0AAAD)
_M2 = np.uint32(0x735A2D97)


def _mix(x):
    """A 32-bit multiply-xorshift mixer (a bijection of uint32; constants from Wellons' hash-prospector)."""
    x = x ^ (x >> 16)
    x = x * _M1
    x = x ^ (x >> 15)
    x = x * _M2
    return x ^ (x >> 15)


def _uniform_rows(seeds, row, batch):
    """24-bit uniforms for row ``row`` of a chunk: hash of (seed, row * batch + column)."""
    ctr = jnp.uint32(row) * jnp.uint32(batch) + jnp.arange(batch, dtype=jnp.uint32)
    h = _mix(_mix(ctr ^ seeds[0]) + seeds[1])
    return (h >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def _sample_chunk(key, n, n_treated, batch, rng):
    """(n, batch) boolean: ``batch`` independent uniformly random n_treated-subsets of n units."""
    rem = jnp.arange(n, 0, -1, dtype=jnp.float32)
    if rng == "threefry":
        u_all = jax.random.uniform(key, (n, batch), jnp.float32)
        xs = (u_all, rem)

        def step(need, x):
            u, r = x
            sel = u * r < need
            return need - sel.astype(jnp.float32), sel

    else:
        seeds = jax.random.bits(key, (2,), jnp.uint32)
        xs = (jnp.arange(n, dtype=jnp.uint32), rem)

        def step(need, x):
            i, r = x
            sel = _uniform_rows(seeds, i, batch) * r < need
            return need - sel.astype(jnp.float32), sel

    _, w = jax.lax.scan(step, jnp.full((batch,), float(n_treated), jnp.float32), xs)
    return w


def _binomial_table(n, k):
    """table[m, j] = C(m, j) for 0 <= m < n, -1 <= j < k (column 0 is j = -1, i.e. 0), int64."""
    t = np.zeros((n, k + 1), np.int64)
    for m in range(n):
        for j in range(k):
            t[m, j + 1] = math.comb(m, j)
    return t


def _unrank_chunk(first_rank, n, n_treated, batch, table):
    """(n, batch) boolean: subsets of rank first_rank .. first_rank + batch - 1 (lexicographic)."""
    r0 = first_rank + jnp.arange(batch, dtype=jnp.int32)
    rem_minus_1 = jnp.arange(n - 1, -1, -1, dtype=jnp.int32)

    def step(carry, m):
        r, need = carry
        c = table[m, need]  # C(rem - 1, need - 1); need = 0 -> column 0 -> 0
        sel = r < c
        return (jnp.where(sel, r, r - c), need - sel.astype(jnp.int32)), sel

    _, w = jax.lax.scan(step, (r0, jnp.full((batch,), n_treated, jnp.int32)), rem_minus_1)
    return w


def _balance_of(w, z, scale, balance):
    """Balance of each column of the (n, B) boolean batch ``w``."""
    smd = (z.T @ w.astype(jnp.float32)).T * scale  # (B, d)
    return reduce_smd(smd, balance, jnp)


def _chunk_fn(cov: Covariates, n_treated, batch, *, exact, rng, table=None, pack=True):
    n = cov.n_units
    z = jnp.asarray(cov.whitened)
    scale = np.float32(math.sqrt(n / (n_treated * (n - n_treated))))

    def one(key, index):
        if exact:
            w = _unrank_chunk(index * batch, n, n_treated, batch, table)
        else:
            w = _sample_chunk(jax.random.fold_in(key, index), n, n_treated, batch, rng)
        m = _balance_of(w, z, scale, cov.balance)
        return (m, jnp.packbits(w, axis=0)) if pack else (m, None)

    return one


def candidate_runner(
    covariates: Covariates, n_treated: int, batch: int, *, rng: str = "hash", devices=None
):
    """The Monte-Carlo candidate kernel `draw_pool` runs: a jitted ``run(key, chunks)``.

    ``chunks`` is an int32 array of D chunk indices, one per device of ``devices`` (default: the
    first local device); chunk ``c`` draws ``batch`` uniformly random ``n_treated``-subsets with
    ``fold_in(key, c)`` and returns their balances (D, batch) and the assignments bit-packed along
    the units, (D, ceil(n / 8), batch) uint8. `draw_pool` compares the balances with its threshold
    on the host and keeps the accepted assignments; this function is the part that scales (for
    benchmarks and custom loops).

    Args:
        covariates: from `Covariates.build` (its balance function is used).
        n_treated: treated units per assignment.
        batch: candidates per chunk (a multiple of 8).
        rng: ``"hash"`` or ``"threefry"`` (see `draw_pool`).
        devices: devices to shard the chunks over.
    """
    if not isinstance(covariates, Covariates):
        raise RerandomizationError(
            f"covariates: expected a Covariates (Covariates.build(x)), got {type(covariates).__name__}"
        )
    n_treated = check_units(covariates.n_units, n_treated)
    if batch < 8 or batch % 8:
        raise RerandomizationError(f"batch: expected a multiple of 8, >= 8, got {batch}")
    if rng not in ("hash", "threefry"):
        raise RerandomizationError(f"rng: expected 'hash' or 'threefry', got {rng!r}")
    devices = list(jax.devices()[:1] if devices is None else devices)
    return _runner(_chunk_fn(covariates, n_treated, batch, exact=False, rng=rng), devices)


def _runner(one, devices):
    """A jitted function of (key, chunk indices (D,)) -> balances (D, B), packed (D, nb, B),
    each device taking one chunk."""
    if len(devices) == 1:
        return jax.jit(lambda key, idx: jax.vmap(lambda i: one(key, i))(idx))
    mesh = jax.sharding.Mesh(np.asarray(devices), ("chunks",))
    spec = jax.sharding.PartitionSpec("chunks")

    def local(key, idx):
        return jax.vmap(lambda i: one(key, i))(idx)

    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(jax.sharding.PartitionSpec(), spec),
        out_specs=spec,
        check_vma=False,
    )
    return jax.jit(sharded)


@dataclasses.dataclass(frozen=True, eq=False)
class Pool:
    """An acceptable-randomization pool.

    Attributes:
        packed: (K, ceil(n / 8)) uint8, the accepted assignments bit-packed (``np.unpackbits``
            with ``count=n`` restores them; `assignments` does it).
        balance: (K,) balance value of each accepted assignment.
        threshold: the acceptance threshold (``inf`` for complete randomization).
        n_units, n_treated: design size.
        n_candidates: candidates generated (for ``exact``: C(n, n_treated)).
        exact: whether the pool is the full acceptable set (enumeration) or a Monte-Carlo sample.
        balance_name: the balance function's name.
        accept_prob: the requested acceptance probability, if the threshold came from one.
    """

    packed: np.ndarray
    balance: np.ndarray
    threshold: float
    n_units: int
    n_treated: int
    n_candidates: int
    exact: bool
    balance_name: str
    accept_prob: float | None = None

    @property
    def size(self) -> int:
        return int(self.packed.shape[0])

    @property
    def acceptance_rate(self) -> float:
        """Accepted / generated candidates."""
        return self.size / max(self.n_candidates, 1)

    def assignments(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Boolean (k, n) assignments ``start:stop`` of the pool."""
        return np.unpackbits(self.packed[start:stop], axis=1, count=self.n_units).astype(bool)

    def save(self, path) -> Path:
        """Write the pool to ``path`` (.npz, atomically); `Pool.load` reads it back."""
        path = Path(path)
        meta = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        arrays = {k: meta.pop(k) for k in ("packed", "balance")}
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, meta=np.asarray(json.dumps(meta)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> Pool:
        with np.load(path) as f:
            return cls(packed=f["packed"], balance=f["balance"], **json.loads(str(f["meta"])))


def acceptance_threshold(accept_prob: float, dim: int) -> float:
    """The asymptotic threshold: the ``accept_prob`` quantile of chi^2_d (Morgan & Rubin 2012)."""
    from scipy import stats

    return float(stats.chi2.ppf(accept_prob, dim))


def draw_pool(
    key,
    covariates,
    n_treated: int,
    *,
    threshold: float | None = None,
    accept_prob: float | None = None,
    threshold_rule: str = "empirical",
    n_accepted: int = 10_000,
    max_candidates: int | None = None,
    method: str = "auto",
    max_enumerate: int = MAX_ENUMERATE,
    balance: str | Callable = "mahalanobis",
    names=None,
    ridge: float = 0.0,
    chunk_size: int | None = None,
    devices=None,
    rng: str = "hash",
    calibration: int | None = None,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: float = 30.0,
) -> Pool:
    """Draw a pool of acceptable randomizations of ``n_treated`` of the n units.

    Args:
        key: a ``jax.random`` key; the pool is a function of it (and the arguments) only.
        covariates: (n, d) array or DataFrame. Balance is computed on these.
        n_treated: treated units per assignment (1 <= n_treated <= n - 1).
        threshold: accept assignments with balance <= threshold.
        accept_prob: alternatively, the fraction of complete randomizations to accept. The
            threshold is then its quantile: exact over all assignments when enumerating; with
            ``threshold_rule="empirical"`` (default) from ``calibration`` separate candidates,
            with ``"chi2"`` the chi^2_d quantile (Mahalanobis balance only; asymptotic).
            Neither given: complete randomization (every assignment accepted).
        n_accepted: Monte-Carlo pool size (ignored when enumerating: the pool is the whole
            acceptable set).
        max_candidates: give up after this many candidates (default ``1000 * n_accepted``); a
            threshold that accepts nothing is an error, fewer than n_accepted a warning.
        method: ``"exact"`` (enumerate all C(n, n_treated) assignments), ``"monte_carlo"`` or
            ``"auto"`` (exact when C(n, n_treated) <= max_enumerate).
        max_enumerate: largest enumeration allowed (at most 2**31 - 1).
        balance, names, ridge: see `Covariates.build`.
        chunk_size: candidates per chunk (memory is O(chunk_size * n)); default: the power of
            two nearest below 5.3e6 / n, within [256, 8192] (the (n, chunk) batch stays in cache-
            friendly sizes: at n = 5000 a chunk of 1024 runs 2.4x faster than 4096).
        devices: devices to shard chunks over (default: all local devices of the default backend).
        rng: ``"hash"`` (fast counter-based uniforms) or ``"threefry"`` (``jax.random.uniform``).
        calibration: candidates used for the empirical threshold (default max(10**5, 100 /
            accept_prob)).
        progress: show a progress bar on stderr.
        checkpoint: a folder where a Monte-Carlo pool's draw is checkpointed (every
            ``checkpoint_every`` seconds and when done; `jaxaccel.runtime.Checkpointer`): a call
            with the same arguments resumes there and returns the same pool as an uninterrupted
            call. A checkpoint of other arguments raises `jaxaccel.CheckpointError`.
        checkpoint_every: seconds between checkpoints.
    """
    cov = Covariates.build(covariates, names=names, balance=balance, ridge=ridge)
    n = cov.n_units
    n_treated = check_units(n, n_treated)
    if threshold is not None and accept_prob is not None:
        raise RerandomizationError("threshold, accept_prob: give one of them, not both")
    if accept_prob is not None and not 0 < accept_prob <= 1:
        raise RerandomizationError(f"accept_prob: expected 0 < accept_prob <= 1, got {accept_prob}")
    if threshold is not None and not threshold >= 0:
        raise RerandomizationError(f"threshold: expected a number >= 0, got {threshold}")
    if threshold_rule not in ("empirical", "chi2"):
        raise RerandomizationError(
            f"threshold_rule: expected 'empirical' or 'chi2', got {threshold_rule!r}"
        )
    if threshold_rule == "chi2" and accept_prob is not None and cov.balance != "mahalanobis":
        raise RerandomizationError(
            "threshold_rule='chi2': the chi^2_d law holds for the Mahalanobis balance only; "
            f"balance is {cov.balance!r} (use threshold_rule='empirical')"
        )
    if method not in ("auto", "exact", "monte_carlo"):
        raise RerandomizationError(
            f"method: expected 'auto', 'exact' or 'monte_carlo', got {method!r}"
        )
    if rng not in ("hash", "threefry"):
        raise RerandomizationError(f"rng: expected 'hash' or 'threefry', got {rng!r}")
    if not 1 <= max_enumerate <= ENUMERATE_HARD_LIMIT:
        raise RerandomizationError(
            f"max_enumerate: expected 1 <= max_enumerate <= {ENUMERATE_HARD_LIMIT}, got {max_enumerate}"
        )
    if chunk_size is None:
        chunk_size = int(min(8192, max(256, 2 ** math.floor(math.log2(5.3e6 / n)))))
    if chunk_size < 8 or chunk_size % 8:
        raise RerandomizationError(f"chunk_size: expected a multiple of 8, >= 8, got {chunk_size}")
    if n_accepted < 1:
        raise RerandomizationError(f"n_accepted: expected >= 1, got {n_accepted}")
    devices = list(jax.devices() if devices is None else devices)
    total = math.comb(n, n_treated)
    exact = method == "exact" or (method == "auto" and total <= max_enumerate)
    if exact and total > max_enumerate:
        raise RerandomizationError(
            f"method='exact': C({n}, {n_treated}) = {total:.4g} assignments exceed max_enumerate = "
            f"{max_enumerate:.4g} (hard limit {ENUMERATE_HARD_LIMIT}); use method='monte_carlo' "
            "or raise max_enumerate"
        )
    name = (
        cov.balance if isinstance(cov.balance, str) else getattr(cov.balance, "__name__", "custom")
    )
    if exact:
        return _enumerate(
            cov, key, n_treated, threshold, accept_prob, chunk_size, devices, progress, name
        )
    max_candidates = max_candidates or 1000 * n_accepted
    settings = (n_treated, threshold, accept_prob, threshold_rule, n_accepted, max_candidates)
    settings += (chunk_size, rng, name, calibration)
    data = hashlib.sha256(np.ascontiguousarray(cov.whitened).tobytes()).hexdigest()[:16]

    def ckpt(part):
        if checkpoint is None:
            return None
        fp = runtime.fingerprint("draw_pool", part, key, data, *settings)
        return runtime.Checkpointer(Path(checkpoint) / part, fp)

    stream = dict(cov=cov, n_treated=n_treated, chunk=chunk_size, devices=devices, rng=rng)
    stream |= dict(progress=progress, every=checkpoint_every)
    if accept_prob is not None:
        if threshold_rule == "chi2":
            threshold = acceptance_threshold(accept_prob, cov.dim)
        elif accept_prob < 1:
            k_cal = calibration or max(100_000, math.ceil(100 / accept_prob))
            cal = _stream(
                key=jax.random.fold_in(key, 0x5EED),
                threshold=math.inf,
                want=k_cal,
                max_cand=k_cal,
                keep=False,
                desc="calibrate threshold",
                ckpt=ckpt("calibration"),
                **stream,
            )[1]
            threshold = float(np.quantile(cal, accept_prob, method="inverted_cdf"))
    threshold = math.inf if threshold is None else float(threshold)
    n_cand, bal, packed = _stream(
        key=key,
        threshold=threshold,
        want=n_accepted,
        max_cand=max_candidates,
        keep=True,
        desc="pool",
        ckpt=ckpt("pool"),
        **stream,
    )
    if bal.size == 0:
        raise RerandomizationError(
            f"threshold: {threshold:.4g} accepted none of {n_cand} candidates; the design cannot "
            "be drawn. Raise threshold / accept_prob (under normality the Mahalanobis balance is "
            f"about chi^2_{cov.dim}: its 1% quantile is {acceptance_threshold(0.01, cov.dim):.3g})"
        )
    if bal.size < n_accepted:
        warnings.warn(
            f"draw_pool: only {bal.size} of n_accepted={n_accepted} accepted within "
            f"max_candidates={max_candidates} (acceptance rate {bal.size / n_cand:.3g})",
            RuntimeWarning,
            stacklevel=2,
        )
    return Pool(packed, bal, threshold, n, n_treated, n_cand, False, name, accept_prob)


def _stream(
    *,
    cov,
    n_treated,
    key,
    threshold,
    want,
    max_cand,
    chunk,
    devices,
    rng,
    progress,
    keep,
    desc,
    ckpt,
    every,
):
    """Monte-Carlo candidates chunk by chunk until ``want`` are accepted or ``max_cand`` drawn:
    (candidates drawn, accepted balances[, accepted packed assignments]). The pool is cut at the
    ``want``-th accepted candidate in chunk order, so it does not depend on the device count (nor
    on where a checkpointed draw was resumed: chunk ``c`` always uses ``fold_in(key, c)``)."""
    run = _runner(_chunk_fn(cov, n_treated, chunk, exact=False, rng=rng, pack=keep), devices)
    d = len(devices)
    nb = -(-cov.n_units // 8)
    bals = [np.zeros(0, np.float32)]
    packs = [np.zeros((0, nb), np.uint8)]
    got = drawn = next_chunk = saves = 0
    found = None if ckpt is None else ckpt.restore({})
    if found is not None:
        got, drawn = int(found.meta["got"]), int(found.meta["drawn"])
        next_chunk, saves = int(found.meta["next_chunk"]), found.step
        bals = [found.arrays["balance"]]
        if keep:
            packs = [found.arrays["packed"]]

    def save():
        nonlocal saves
        bals[:] = [np.concatenate(bals)]
        arrays = {"balance": bals[0]}
        if keep:
            packs[:] = [np.concatenate(packs)]
            arrays["packed"] = packs[0]
        saves += 1  # the save count, not the chunk, numbers checkpoints (alternating files)
        meta = {"got": got, "drawn": drawn, "next_chunk": next_chunk}
        ckpt.save(saves, {}, arrays=arrays, meta=meta)

    with runtime.Progress(want, desc, unit="assignment", enabled=progress) as bar:
        bar.resumed(got)
        last, dirty = time.monotonic(), False
        while got < want and drawn < max_cand:
            idx = jnp.arange(next_chunk, next_chunk + d, dtype=jnp.int32)
            if next_chunk == 0 or not dirty:
                with bar.compiling():
                    m, p = jax.block_until_ready(run(key, idx))
            else:
                m, p = run(key, idx)
            m = np.asarray(m).reshape(-1)
            ok = np.nonzero(m <= threshold)[0][: want - got]
            used = m.size if got + ok.size < want else int(ok[-1]) + 1
            if keep:
                p = np.asarray(p)  # (D, nb, B) -> (D * B, nb)
                packs.append(p.transpose(0, 2, 1).reshape(-1, p.shape[1])[ok])
            bals.append(m[ok])
            got += ok.size
            drawn += used
            next_chunk += d
            dirty = True
            bar.set(got, candidates=drawn)
            if ckpt is not None and time.monotonic() - last > every:
                save()
                last = time.monotonic()
        if ckpt is not None and dirty:
            save()
    bal = np.concatenate(bals)
    if keep:
        return drawn, bal, np.concatenate(packs)
    return drawn, bal


def _enumerate(cov, key, n_treated, threshold, accept_prob, chunk, devices, progress, name):
    """The full acceptable set by enumerating every assignment in lexicographic order."""
    n = cov.n_units
    total = math.comb(n, n_treated)
    chunk = min(chunk, 8 * math.ceil(total / 8 / len(devices)))
    # entries above C(n, n_treated) are never reached while unranking: clip them into int32
    table = jnp.asarray(
        np.minimum(_binomial_table(n, n_treated), ENUMERATE_HARD_LIMIT).astype(np.int32)
    )
    run = _runner(_chunk_fn(cov, n_treated, chunk, exact=True, rng=None, table=table), devices)
    d = len(devices)
    steps = math.ceil(total / (chunk * d))

    def sweep(keep_below):
        bals, packs = [], []
        with runtime.Progress(total, "enumerate", unit="assignment", enabled=progress) as bar:
            for s in range(steps):
                idx = jnp.arange(s * d, (s + 1) * d, dtype=jnp.int32)
                m, p = run(key, idx)  # the key is unused: enumeration is deterministic
                m = np.asarray(m).reshape(-1)
                valid = np.arange(s * d * chunk, (s + 1) * d * chunk) < total
                ok = np.nonzero(valid & (m <= keep_below))[0] if keep_below is not None else None
                if ok is None:
                    bals.append(m[valid])
                else:
                    p = np.asarray(p)
                    packs.append(p.transpose(0, 2, 1).reshape(-1, p.shape[1])[ok])
                    bals.append(m[ok])
                bar.update(int(valid.sum()), accepted=sum(b.size for b in bals))
        return np.concatenate(bals), (np.concatenate(packs) if packs else None)

    if accept_prob is not None and accept_prob < 1:
        all_m, _ = sweep(None)
        threshold = float(np.quantile(all_m, accept_prob, method="inverted_cdf"))
    threshold = math.inf if threshold is None else float(threshold)
    bal, packed = sweep(threshold)
    if bal.size == 0:
        raise RerandomizationError(
            f"threshold: {threshold:.4g} accepts none of the {total} assignments (smallest "
            "balance is above it); raise threshold / accept_prob"
        )
    return Pool(packed, bal, threshold, n, n_treated, total, True, name, accept_prob)
