"""``jaxaccel mri-recon``: train small reconstruction networks on simulated phantoms (or resume their
checkpoints) and reconstruct the real T1 brain slice (``../shared/data/mri``) at 4x and 8x.

The slice is never trained on. It is simulated as an 8-coil acquisition (smooth random phase,
birdcage sensitivities, 1% complex noise) and undersampled with fastMRI random masks (4x with 8%
centre, 8x with 4% centre). Methods: zero-filled (SENSE-combined with the true maps), compressed
sensing (MFISTA, wavelet L1 + TV, regularisation chosen by a sweep on a simulated phantom of the
slice's size, not on the slice), and each network. Writes ``summary.json`` and ``metrics.md`` (SSIM, PSNR, NMSE over the
whole image and inside the brain mask, seconds per slice), ``recon_4x.png``/``recon_8x.png``
(ground truth, every method, error maps) and ``checkpoints/<model>/`` (resumed on rerun).

Sizes: ``tiny`` (tests: 32 x 32 training, 2 steps, two networks), ``small`` (96 x 96, 1000 steps
per model; 2-7 minutes per model on 2 cores, ~20 minutes for the four), ``full`` (128 x 128, 1500
steps). Config keys (TOML): ``models`` (list of ``unet``, ``rim``, ``cirim``, ``varnet``),
``steps``, ``batch``, ``lr``, ``shape`` (training size, sides multiples of 16),
``cs_iterations``, ``cs_sweep`` (list of [wavelet, tv] weights tried on the phantom), ``data``
(path of a 2D magnitude slice, ``.npy``; default the shipped T1 slice).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxaccel import runtime
from jaxaccel.runtime import ConfigError, Range

from . import _metrics
from ._cs import Wavelet, cs_reconstruct
from ._data import phantom
from ._masks import _check as _check_mask, random_mask
from ._nets import CIRIM, RIM, UNet, VarNet
from ._physics import MRIError, Sample, sense_adjoint, simulate
from ._train import LOSS_NAME, TrainConfig, train

__all__ = [
    "JOB",
    "MRIConfig",
    "MODELS_CONFIG",
    "ACQUISITIONS",
    "CS_LAMBDAS",
    "SHAPE_MULTIPLE",
    "build_model",
    "job_key",
    "default_slice",
    "load_slice",
    "acquire",
    "train_models",
    "choose_cs",
    "score",
    "timed",
]

ModelName = Literal["unet", "rim", "cirim", "varnet"]
MODELS_CONFIG: dict[str, dict[str, Any]] = {
    "unet": {"channels": (16, 32, 64)},
    "rim": {"cell": "indrnn", "hidden": 16, "steps": 4},
    "cirim": {"cell": "indrnn", "hidden": 16, "steps": 3, "cascades": 2, "consistency": "explicit"},
    "varnet": {"cascades": 4, "channels": (8, 16, 32), "sens_channels": (4, 8)},
}
_CLASSES = {"unet": UNet, "rim": RIM, "cirim": CIRIM, "varnet": VarNet}
ACQUISITIONS = {"4x": (4.0, 0.08), "8x": (8.0, 0.04)}
CS_LAMBDAS = ((1e-3, 1e-3), (1e-3, 3e-3), (3e-3, 1e-3), (3e-3, 3e-3), (1e-2, 1e-3))
# every image the job handles must halve cleanly: the CS wavelet's levels and the U-Nets' poolings
_POOLS = max(len(v) for c in MODELS_CONFIG.values() for k, v in c.items() if "channels" in k)
SHAPE_MULTIPLE = max(2 ** Wavelet().levels, 2**_POOLS)


def build_model(name: str, *, key: jax.Array):
    """The job's network ``name`` (one of `MODELS_CONFIG`), initialised from ``key``."""
    if name not in _CLASSES:
        raise MRIError(f"name: expected one of {', '.join(_CLASSES)}, got {name!r}")
    return _CLASSES[name](**MODELS_CONFIG[name], key=key)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MRIConfig:
    """``jaxaccel mri-recon`` settings; the defaults are the ``small`` size.

    Attributes:
        models: networks to train and compare (a list; any of unet, rim, cirim, varnet).
        steps: training steps per network.
        batch: simulated phantoms per step.
        lr: peak learning rate (Adam, cosine decay).
        shape: training image size [H, W]; each side a multiple of `SHAPE_MULTIPLE` (16).
        cs_iterations: MFISTA iterations of compressed sensing (sweep and evaluation).
        cs_sweep: [wavelet, tv] regularisation pairs tried on a simulated phantom of the slice's
            size; the best (SSIM) reconstructs the slice.
        data: the 2D magnitude slice (``.npy``) to reconstruct; ``None``: the shipped T1 slice.
        prng: the JAX PRNG implementation the networks' initial weights and training batches are
            drawn with, seeded from the job's key (`job_key`): ``"rbg"`` (XLA's RngBitGenerator)
            compiles several times faster on CPU than ``"threefry2x32"`` (JAX's default), whose
            hash dominates the compilation of the initialisers and of the simulated batches.
    """

    models: Annotated[tuple[ModelName, ...], Range(ge=1, length=True)] = (
        "unet",
        "rim",
        "cirim",
        "varnet",
    )
    steps: Annotated[int, Range(ge=1)] = 1000
    batch: Annotated[int, Range(ge=1)] = 2
    lr: Annotated[float, Range(gt=0)] = 1e-3
    shape: tuple[int, int] = (96, 96)
    cs_iterations: Annotated[int, Range(ge=1)] = 100
    cs_sweep: Annotated[tuple[tuple[float, float], ...], Range(ge=1, length=True)] = CS_LAMBDAS
    data: Path | None = None
    prng: Literal["rbg", "threefry2x32"] = "rbg"

    def __post_init__(self):
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"expected each model once, got {list(self.models)}", key="models")
        h, w = self.shape
        if min(h, w) < SHAPE_MULTIPLE or h % SHAPE_MULTIPLE or w % SHAPE_MULTIPLE:
            raise ConfigError(
                f"expected [H, W] with each side a positive multiple of {SHAPE_MULTIPLE} (the CS "
                f"wavelet's {Wavelet().levels} levels and the U-Nets' {_POOLS} poolings halve "
                f"it), got [{h}, {w}]",
                key="shape",
            )
        for accel, frac in ACQUISITIONS.values():
            try:
                _check_mask(w, accel, frac)
            except MRIError as e:
                raise ConfigError(
                    f"width {w} is too small for a {accel:g}x mask ({e})", key="shape"
                ) from None
        for i, pair in enumerate(self.cs_sweep):
            if min(pair) < 0:
                raise ConfigError(
                    f"expected [wavelet, tv] weights >= 0, got {list(pair)}", key=f"cs_sweep[{i}]"
                )

    def train_config(self) -> TrainConfig:
        """The training settings every network of the job shares."""
        return TrainConfig(
            steps=self.steps,
            batch=self.batch,
            lr=self.lr,
            shape=self.shape,
            checkpoint_every=max(1, self.steps // 5),
        )


def job_key(key: jax.Array, prng: str = "rbg") -> jax.Array:
    """The key the job draws from: ``key`` re-seeded as a ``prng`` key.

    For ``key = jax.random.key(seed)`` this is ``jax.random.key(seed, impl=prng)``; a key of that
    implementation is returned as is. `train_models` draws from it.
    """
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise MRIError(f"key: expected a JAX PRNG key (jax.random.key(seed)), got {key!r}")
    impl = str(jax.random.key_impl(key))
    if impl == prng:
        return key
    data = jax.random.key_data(key)
    if impl != "threefry2x32" or prng not in ("rbg", "threefry2x32"):
        raise MRIError(f"key: cannot re-seed a {impl!r} key as {prng!r}")
    # rbg's seeding is threefry's, twice: key(seed, impl="rbg") holds [hi, lo, hi, lo]
    return jax.random.wrap_key_data(jnp.concatenate([data, data]), impl=prng)


def default_slice() -> Path:
    """``../shared/data/mri/t1_coronal_slice.npy`` beside the repository."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "mri" / "t1_coronal_slice.npy"


def load_slice(path: str | Path | None = None, *, name: str = "data"):
    """The slice (float32 (H, W), a magnitude image), its foreground mask (image > 0) and its path.

    Checks it is a 2D ``.npy`` array of finite, non-negative, not all-zero values whose sides are
    multiples of `SHAPE_MULTIPLE`; errors (`MRIError`) name ``name``.
    """
    path = Path(path) if path is not None else default_slice()
    if not path.exists():
        where = " (the T1 slice ships in ../shared/data/mri)" if path == default_slice() else ""
        raise MRIError(f"{name}: {path} does not exist{where}")
    if not path.is_file():
        raise MRIError(f"{name}: {path} is not a file (expected a .npy array)")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"PK"):
        raise MRIError(f"{name}: {path} is an .npz archive; expected one 2D array saved by np.save")
    if magic != b"\x93NUMPY":
        raise MRIError(f"{name}: {path} is not a .npy array file (no NumPy header)")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # object arrays need pickle, which a data file must not
            raise MRIError(f"{name}: {path} holds Python objects, not a numeric array") from None
        raise MRIError(f"{name}: {path} is not a readable .npy array file ({e})") from None
    except (OSError, EOFError) as e:
        raise MRIError(f"{name}: {path} is not a readable .npy array file ({e})") from None
    if arr.dtype.kind not in "fiu":
        raise MRIError(f"{name}: expected a real magnitude image, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise MRIError(f"{name}: expected a 2D slice (H, W), got shape {arr.shape}")
    h, w = arr.shape
    if min(h, w) < SHAPE_MULTIPLE or h % SHAPE_MULTIPLE or w % SHAPE_MULTIPLE:
        raise MRIError(
            f"{name}: expected a slice whose sides are multiples of {SHAPE_MULTIPLE}, got {h} x {w}"
        )
    gt = arr.astype(np.float32)
    bad = int((~np.isfinite(gt)).sum())
    if bad:
        raise MRIError(f"{name}: {path} has {bad} NaN or inf pixel(s)")
    if gt.min() < 0:
        raise MRIError(f"{name}: expected a magnitude image (>= 0), got minimum {gt.min():g}")
    if not gt.max() > 0:
        raise MRIError(f"{name}: {path} is all zero (nothing to reconstruct)")
    return gt, gt > 0, path


def _check(config: MRIConfig) -> None:
    """Before anything is trained: the slice must load and be usable."""
    try:
        load_slice(config.data)
    except MRIError as e:
        raise ConfigError(str(e).removeprefix("data: "), key="data") from None


_phantom = jax.jit(phantom, static_argnums=0)  # one compilation rather than one per operation


def choose_cs(shape: tuple[int, int], iterations: int, sweep=CS_LAMBDAS, *, key: jax.Array):
    """Regularisation for CS chosen on a simulated phantom at 4x: (best pair, SSIM of each pair)."""
    img = _phantom(tuple(shape), key=key)
    mask = random_mask(shape, 4.0, 0.08, key=key)
    s = simulate(img, mask, noise=0.01, key=jax.random.fold_in(key, 1))
    scores = []
    for lw, ltv in sweep:
        out = cs_reconstruct(
            s.kspace, s.mask, s.maps, lam_wavelet=lw, lam_tv=ltv, iterations=iterations
        ).image
        scores.append(float(_metrics.ssim(img, jnp.abs(out))))
    return tuple(sweep[int(np.argmax(scores))]), scores


def score(gt, out, brain) -> dict[str, float]:
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


def timed(fn, *args):
    """(output, seconds) of a call, compilation excluded (one warm-up call first)."""
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def acquire(gt, *, key: jax.Array) -> dict[str, Sample]:
    """The simulated 8-coil acquisitions of ``gt`` at each of `ACQUISITIONS` ({tag: Sample}); the
    same arrays for the same key (the benchmark reconstructs exactly what the job does)."""
    out = {}
    for tag, (accel, frac) in ACQUISITIONS.items():
        mask = random_mask(gt.shape, accel, frac, key=jax.random.fold_in(key, 400))
        out[tag] = simulate(gt, mask, n_coils=8, noise=0.01, key=jax.random.fold_in(key, 401))
    return out


def train_models(
    config: MRIConfig, *, key: jax.Array, folder: Path | None, progress: bool = True
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Train (or resume from ``folder/<model>``) each model of ``config``: (models, info), info
    per model: steps, the loss's name, the final and every step's loss, the step it resumed from
    and the seconds this call took.

    Initial weights and training batches are drawn from ``job_key(key, config.prng)``."""
    key = job_key(key, config.prng)
    models, info = {}, {}
    cfg = config.train_config()
    for name in config.models:
        i = list(_CLASSES).index(name)  # keys per model name: a subset trains the same models
        t = time.perf_counter()
        model, losses, resumed = train(
            build_model(name, key=jax.random.fold_in(key, 100 + i)),
            cfg,
            key=jax.random.fold_in(key, 200 + i),
            folder=None if folder is None else Path(folder) / name,
            progress=progress,
            desc=name,
        )
        models[name] = model
        info[name] = {
            "steps": cfg.steps,
            "loss": LOSS_NAME,
            "final_loss": losses[-1],
            "losses": losses,
            "resumed_from": resumed,
            "seconds_this_run": time.perf_counter() - t,
        }
        if progress:
            again = f" (resumed from step {resumed})" if resumed else ""
            print(
                f"[mri-recon] {name}: {cfg.steps} steps{again}, final {LOSS_NAME} "
                f"{losses[-1]:.4f} (phantom batch)",
                file=sys.stderr,
            )
    return models, info


def _science(config: MRIConfig, *, key, out: Path, progress: bool) -> runtime.Summary:
    gt, brain, path = load_slice(config.data)
    models, training = train_models(config, key=key, folder=out / "checkpoints", progress=progress)
    # on a phantom of the slice's size: the regularisation is tuned at the resolution it is used
    # at, and the sweep shares the evaluation's MFISTA compilation
    (lw, ltv), sweep = choose_cs(
        gt.shape, config.cs_iterations, config.cs_sweep, key=jax.random.fold_in(key, 300)
    )
    # jitted once: both accelerations have the same shapes, so nothing recompiles between them
    zf = jax.jit(lambda k, m, maps: sense_adjoint(k, maps, m))

    def cs(k, m, maps):  # validated on the host, then one jitted MFISTA call
        return cs_reconstruct(
            k, m, maps, lam_wavelet=lw, lam_tv=ltv, iterations=config.cs_iterations
        ).image

    methods = {"zero-filled": zf, "CS": cs, **{n: eqx.filter_jit(m) for n, m in models.items()}}
    acquisitions, files = {}, []
    with runtime.Progress(2 * len(methods), "reconstruct", unit="recon", enabled=progress) as bar:
        for tag, s in acquire(gt, key=key).items():
            accel, frac = ACQUISITIONS[tag]
            recons, rows = {}, {}
            for name, f in methods.items():
                with bar.phase(f"{tag} {name}"):
                    recons[name], secs = timed(f, s.kspace, s.mask, s.maps)
                rows[name] = score(gt, recons[name], brain) | {"seconds": secs}
                bar.update(1)
            acquisitions[tag] = {
                "acceleration": accel,
                "center_fraction": frac,
                "achieved": float(gt.size / np.broadcast_to(s.mask, gt.shape).sum()),
                "methods": rows,
            }
            files.append(f"recon_{tag}.png")
            _figure(gt, recons, rows, out / files[-1], tag)
    results = {
        "data": str(path),
        "cs_lambda": {"wavelet": lw, "tv": ltv},
        "cs_sweep": [
            {"wavelet": a, "tv": b, "ssim_on_phantom": v}
            for (a, b), v in zip(config.cs_sweep, sweep, strict=True)
        ],
        "training": {n: {k: v for k, v in t.items() if k != "losses"} for n, t in training.items()},
        "acquisitions": acquisitions,
    }
    table = _table(results)
    (out / "metrics.md").write_text(table)
    return runtime.Summary(
        job="mri-recon", results=results, table=table, files=(*files, "metrics.md")
    )


def _figure(gt, recons, rows, path, tag):
    names = list(recons)
    fig, axes = runtime.figure(
        2, len(names) + 1, figsize=(2.4 * (len(names) + 1), 5), layout="constrained"
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
    runtime.save_figure(fig, path, dpi=110)


def _table(results) -> str:
    lines = [
        f"Training ({LOSS_NAME} on simulated phantoms): "
        + ", ".join(
            f"{n} {t['steps']} steps, final {t['final_loss']:.4f}"
            + (f" (resumed from step {t['resumed_from']})" if t["resumed_from"] else "")
            for n, t in results["training"].items()
        ),
        f"CS: lam_wavelet {results['cs_lambda']['wavelet']:g}, lam_tv "
        f"{results['cs_lambda']['tv']:g} (best SSIM of the sweep on a phantom)",
        "",
    ]
    for tag, acq in results["acquisitions"].items():
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


JOB = runtime.Job(
    name="mri-recon",
    description=__doc__ or "",
    config=MRIConfig,
    science=_science,
    sizes={
        "tiny": {
            "models": ("unet", "rim"),
            "steps": 2,
            "batch": 1,
            "shape": (32, 32),
            "cs_iterations": 10,
            "cs_sweep": CS_LAMBDAS[:2],
        },
        "full": {"steps": 1500, "shape": (128, 128), "cs_iterations": 200},
    },
    options=(
        runtime.Option(flag="--models", key="models", help="networks, e.g. unet,rim"),
        runtime.Option(flag="--data", key="data", help="the 2D magnitude slice (.npy)"),
    ),
    checks=_check,
)
