"""``jaxaccel mri-recon``: train small reconstruction networks on simulated phantoms (or load their
checkpoints) and reconstruct the real T1 brain slice (``../shared/data/mri``) at 4x and 8x.

The slice is never trained on. It is simulated as an 8-coil acquisition (smooth random phase,
birdcage sensitivities, 1% complex noise) and undersampled with fastMRI random masks (4x with 8%
centre, 8x with 4% centre). Methods: zero-filled (SENSE-combined with the true maps), compressed
sensing (MFISTA, wavelet L1 + TV, regularisation chosen by a sweep on a simulated phantom, not on
the slice), and each network. Writes ``metrics.md``/``metrics.json`` (SSIM, PSNR, NMSE over the
whole image and inside the brain mask, seconds per slice), ``recon_4x.png``/``recon_8x.png``
(ground truth, every method, error maps) and ``checkpoints/<model>/`` (resumed on rerun).

Sizes: ``tiny`` (tests: 64 x 64 training, a few steps), ``small`` (96 x 96, 1000 steps per
model; 2-7 minutes per model on 2 cores, ~20 minutes for the four), ``full`` (128 x 128, 1500
steps). Config keys (TOML): ``models`` (list of ``unet``, ``rim``, ``cirim``, ``varnet``),
``steps``, ``batch``, ``shape``, ``cs_iterations``, ``data`` (path of the slice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _metrics
from ._cs import cs_reconstruct
from ._data import phantom
from ._masks import random_mask
from ._nets import CIRIM, RIM, UNet, VarNet
from ._physics import MRIError, sense_adjoint, simulate
from ._train import TrainConfig, train

__all__ = [
    "main",
    "run",
    "SIZES",
    "MODELS",
    "ACQUISITIONS",
    "default_slice",
    "load_slice",
    "acquire",
    "train_models",
    "choose_cs",
    "score",
]

MODELS_CONFIG = {
    "unet": {"channels": (16, 32, 64)},
    "rim": {"cell": "indrnn", "hidden": 16, "steps": 4},
    "cirim": {"cell": "indrnn", "hidden": 16, "steps": 3, "cascades": 2, "consistency": "explicit"},
    "varnet": {"cascades": 4, "channels": (8, 16, 32), "sens_channels": (4, 8)},
}
_CLASSES = {"unet": UNet, "rim": RIM, "cirim": CIRIM, "varnet": VarNet}
MODELS = {
    name: (lambda key, name=name: _CLASSES[name](**MODELS_CONFIG[name], key=key))
    for name in MODELS_CONFIG
}
SIZES = {
    "tiny": {
        "steps": 3,
        "batch": 1,
        "shape": (64, 64),
        "cs_iterations": 20,
        "models": list(MODELS),
    },
    "small": {
        "steps": 1000,
        "batch": 2,
        "shape": (96, 96),
        "cs_iterations": 100,
        "models": list(MODELS),
    },
    "full": {
        "steps": 1500,
        "batch": 2,
        "shape": (128, 128),
        "cs_iterations": 200,
        "models": list(MODELS),
    },
}
ACQUISITIONS = {"4x": (4.0, 0.08), "8x": (8.0, 0.04)}
CS_LAMBDAS = ((1e-3, 1e-3), (1e-3, 3e-3), (3e-3, 1e-3), (3e-3, 3e-3), (1e-2, 1e-3))


def default_slice() -> Path:
    """``../shared/data/mri/t1_coronal_slice.npy`` beside the repository."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mri" / "t1_coronal_slice.npy"


def _settings(size: str, config: dict) -> dict:
    st = dict(SIZES[size])
    unknown = set(config) - set(st) - {"data"}
    if unknown:
        raise MRIError(
            f"--config: unknown key(s) {sorted(unknown)}; known: {sorted(st) + ['data']}"
        )
    st.update(config)
    bad = [m for m in st["models"] if m not in MODELS]
    if bad:
        raise MRIError(f"models: unknown {bad}; known: {sorted(MODELS)}")
    st["shape"] = tuple(st["shape"])
    return st


def choose_cs(key, shape, iterations):
    """Regularisation for CS chosen on a simulated phantom at 4x (the best SSIM of the sweep)."""
    img = phantom(key, shape)
    mask = random_mask(key, shape, 4.0, 0.08)
    s = simulate(jax.random.fold_in(key, 1), img, mask, noise=0.01)
    scores = []
    for lw, ltv in CS_LAMBDAS:
        out = jnp.abs(
            cs_reconstruct(
                s.kspace, s.mask, s.maps, lam_wavelet=lw, lam_tv=ltv, iterations=iterations
            ).image
        )
        scores.append(float(_metrics.ssim(img, out)))
    return CS_LAMBDAS[int(np.argmax(scores))], scores


def score(gt, out, brain) -> dict:
    """fastMRI SSIM/PSNR/NMSE of |out| against ``gt``, whole image and inside ``brain``."""
    out = np.asarray(jnp.abs(out))
    return {
        "ssim": float(_metrics.ssim(gt, out)),
        "psnr": float(_metrics.psnr(gt, out)),
        "nmse": float(_metrics.nmse(gt, out)),
        "ssim_brain": float(_metrics.ssim(gt, out, brain)),
        "psnr_brain": float(_metrics.psnr(gt, out, brain)),
        "nmse_brain": float(_metrics.nmse(gt, out, brain)),
    }


def _timed(fn, *args):
    """(output, seconds) of a jitted call, compile excluded (one warm-up call)."""
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def load_slice(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, Path]:
    """The T1 slice (float32 (256, 256) in [0, 1]), its brain mask (image > 0) and its path."""
    path = Path(path or default_slice())
    if not path.exists():
        raise MRIError(f"data: {path} does not exist (the T1 slice ships in ../shared/data/mri)")
    gt = np.load(path).astype(np.float32)
    if gt.ndim != 2:
        raise MRIError(f"data: expected a 2D slice, got shape {gt.shape}")
    return gt, gt > 0, path


def acquire(gt, key) -> dict:
    """The simulated 8-coil acquisitions of ``gt`` at each of `ACQUISITIONS` ({tag: Sample}); the
    same arrays for the same key (the benchmark reconstructs exactly what the job does)."""
    out = {}
    for tag, (accel, frac) in ACQUISITIONS.items():
        mask = random_mask(jax.random.fold_in(key, 400), gt.shape, accel, frac)
        out[tag] = simulate(jax.random.fold_in(key, 401), gt, mask, n_coils=8, noise=0.01)
    return out


def train_models(st: dict, key, folder: Path) -> tuple[dict, dict]:
    """Train (or resume from ``folder/<model>``) each model of the settings; (models, info)."""
    models, info = {}, {}
    for name in st["models"]:
        i = list(MODELS).index(name)  # keys per model name: a subset trains the same models
        cfg = TrainConfig(
            steps=int(st["steps"]),
            batch=int(st["batch"]),
            shape=st["shape"],
            checkpoint_every=max(1, int(st["steps"]) // 5),
        )
        t = time.perf_counter()
        model, losses = train(
            MODELS[name](jax.random.fold_in(key, 100 + i)),
            cfg,
            key=jax.random.fold_in(key, 200 + i),
            folder=folder / name,
        )
        models[name] = model
        info[name] = {
            "steps": cfg.steps,
            "final_loss": losses[-1] if losses else None,
            "seconds_this_run": time.perf_counter() - t,
        }
        print(f"[mri-recon] {name}: trained {cfg.steps} steps, loss {losses[-1]:.4f}")
    return models, info


def run(size: str, seed: int, out: Path, config: dict) -> dict:
    """Run the job; returns the metrics summary."""
    import matplotlib

    matplotlib.use("Agg")
    st = _settings(size, config)
    gt, brain, path = load_slice(st.get("data"))
    key = jax.random.key(seed)
    out.mkdir(parents=True, exist_ok=True)
    models, train_info = train_models(st, key, out / "checkpoints")
    (lw, ltv), cs_scores = choose_cs(jax.random.fold_in(key, 300), st["shape"], st["cs_iterations"])
    summary = {
        "data": str(path),
        "size": size,
        "cs_lambda": {"wavelet": lw, "tv": ltv},
        "cs_sweep_ssim_on_phantom": cs_scores,
        "training": train_info,
        "acquisitions": {},
    }
    # jitted once: both accelerations have the same shapes, so nothing recompiles between them
    zf = jax.jit(lambda k, m, maps: sense_adjoint(k, maps, m))
    nets = {name: eqx.filter_jit(model) for name, model in models.items()}

    def cs(k, m, maps):  # validated on the host, then one jitted MFISTA call
        return cs_reconstruct(
            k, m, maps, lam_wavelet=lw, lam_tv=ltv, iterations=st["cs_iterations"]
        ).image

    for tag, s in acquire(gt, key).items():
        accel, frac = ACQUISITIONS[tag]
        recons, rows = {}, {}
        for name, f in {"zero-filled": zf, "CS": cs, **nets}.items():
            recons[name], secs = _timed(f, s.kspace, s.mask, s.maps)
            rows[name] = score(gt, recons[name], brain) | {"seconds": secs}
        summary["acquisitions"][tag] = {
            "acceleration": accel,
            "center_fraction": frac,
            "achieved": float(gt.size / np.broadcast_to(s.mask, gt.shape).sum()),
            "methods": rows,
        }
        _figure(gt, recons, rows, out / f"recon_{tag}.png", tag)
        for name, r in rows.items():
            print(
                f"[mri-recon] {tag} {name:>11}: SSIM {r['ssim']:.4f} (brain {r['ssim_brain']:.4f}) "
                f"PSNR {r['psnr']:.2f} dB, {r['seconds'] * 1e3:.1f} ms"
            )
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    (out / "metrics.md").write_text(_table(summary))
    return summary


def _figure(gt, recons, rows, path, tag):
    import matplotlib.pyplot as plt

    names = list(recons)
    fig, axes = plt.subplots(
        2, len(names) + 1, figsize=(2.4 * (len(names) + 1), 5), constrained_layout=True
    )
    axes[0, 0].imshow(gt, cmap="gray", vmin=0, vmax=gt.max())
    axes[0, 0].set_title("ground truth", fontsize=8)
    axes[1, 0].axis("off")
    for j, name in enumerate(names, start=1):
        img = np.abs(np.asarray(recons[name]))
        axes[0, j].imshow(img, cmap="gray", vmin=0, vmax=gt.max())
        axes[0, j].set_title(f"{name}\nSSIM {rows[name]['ssim']:.3f}", fontsize=8)
        axes[1, j].imshow(np.abs(img - gt), cmap="magma", vmin=0, vmax=0.25 * gt.max())
        axes[1, j].set_title("|error| (x4)", fontsize=8)
    for a in axes.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"T1 slice, 8 simulated coils, {tag} random Cartesian undersampling")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(summary) -> str:
    lines = []
    for tag, acq in summary["acquisitions"].items():
        lines += [
            f"## {tag} (achieved {acq['achieved']:.2f}x)",
            "",
            "| method | SSIM | PSNR (dB) | NMSE | SSIM brain | PSNR brain | NMSE brain | s / slice |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in acq["methods"].items():
            lines.append(
                f"| {name} | {r['ssim']:.4f} | {r['psnr']:.2f} | {r['nmse']:.4f} | "
                f"{r['ssim_brain']:.4f} | {r['psnr_brain']:.2f} | {r['nmse_brain']:.4f} | "
                f"{r['seconds']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from jaxaccel import _cli

    def _run(size, seed, out, config):
        try:
            run(size, seed, out, config)
        except MRIError as e:
            raise SystemExit(f"jaxaccel mri-recon: {e}") from None

    return _cli.run_job("mri-recon", __doc__ or "", _run, argv)
