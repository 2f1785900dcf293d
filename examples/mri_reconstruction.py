# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Accelerated MRI reconstruction: physics, compressed sensing and learned reconstructions
#
# An MRI scanner measures the Fourier transform of the image (k-space) through several receive
# coils, each seeing the body through its own smooth **sensitivity map**. Acquiring fewer k-space
# lines (undersampling by R = 4 or 8) shortens the scan R-fold, and the reconstruction has to fill
# in what was not measured. With `science.mri` we:
#
# 1. simulate a multi-coil acquisition of a **real T1 brain slice** (no raw k-space ships with
#    it, so we use the standard retrospective protocol: smooth random phase, coil maps, noise,
#    fastMRI's undersampling masks) and check the operators;
# 2. reconstruct with **compressed sensing** (wavelet L1 + total variation, MFISTA), choosing
#    the regularisation on a simulated phantom, never on the slice we evaluate;
# 3. train **learned reconstructions**, a U-Net, an IndRNN recurrent inference machine (RIM),
#    its cascaded version (CIRIM) and an E2E-VarNet, on random phantoms only, and compare them
#    with zero-filling and CS on the real slice, with fastMRI's SSIM/PSNR/NMSE;
# 4. show where physics-driven augmentation and a conditional flow plug into the data pipeline.
#
# Environment: `MRI_NOTEBOOK_SIZE` (`tiny` for the test suite: 32 x 32 training and two steps;
# `small` by default: the `jaxaccel mri-recon --size small` settings, reusing its checkpoints from
# `MRI_NOTEBOOK_CHECKPOINTS`, default `out/mri-recon/checkpoints`, training them there if absent)
# and `MRI_NOTEBOOK_OUT` (where figures and `summary.json` go).

# %%
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    matplotlib.use("Agg")
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from science import mri

SIZE = os.environ.get("MRI_NOTEBOOK_SIZE", "small")
OUT = Path(os.environ.get("MRI_NOTEBOOK_OUT", "out/mri_notebook"))
OUT.mkdir(parents=True, exist_ok=True)
CKPT = Path(
    os.environ.get(
        "MRI_NOTEBOOK_CHECKPOINTS",
        OUT / "checkpoints" if SIZE == "tiny" else "out/mri-recon/checkpoints",
    )
)
# the job's typed config (`mri.MRIConfig`); tiny: two of the four models, U-Net and CIRIM
settings = mri.JOB.load(
    size=SIZE, overrides={"models": ["unet", "cirim"]} if SIZE == "tiny" else {}
)
summary: dict = {"size": SIZE}
print(f"size {SIZE}: {settings}")

# %% [markdown]
# ## 1. The data and the acquisition
#
# The slice (`../shared/data/mri/t1_coronal_slice.npy`, from dipy) is a skull-stripped 256 x 256
# magnitude image in [0, 1] with an exactly zero background, so every metric is reported over the
# whole image and inside the brain mask (image > 0).
#
# `mri.simulate` turns a magnitude image into a multi-coil acquisition, deterministically per
# key: a smooth random phase (real images are not real-valued), 8 birdcage-style coil maps,
# the centred orthonormal FFT, complex Gaussian noise (1% of the k-space RMS) and the mask.

# %%
gt, brain, _ = mri.load_slice()
key = jax.random.key(0)
maps = mri.birdcage_maps(8, gt.shape)
masks = {
    "random 4x (8% centre)": mri.random_mask(gt.shape, 4.0, 0.08, key=jax.random.key(1)),
    "equispaced 8x (4% centre)": mri.equispaced_mask(gt.shape, 8.0, 0.04, key=jax.random.key(1)),
    "Poisson disc 6x (2D)": mri.poisson_disc_mask(gt.shape, 6.0, calib=20, key=jax.random.key(1)),
}
fig, axes = plt.subplots(2, 4, figsize=(12, 6), constrained_layout=True)
axes[0, 0].imshow(gt, cmap="gray")
axes[0, 0].set_title("T1 slice")
for c in range(3):
    axes[0, c + 1].imshow(np.abs(np.asarray(maps[2 * c])) * gt, cmap="gray")
    axes[0, c + 1].set_title(f"coil {2 * c} image (magnitude)")
axes[1, 0].imshow(np.log1p(np.abs(np.asarray(mri.fft2c(maps[0] * gt)))), cmap="viridis")
axes[1, 0].set_title("coil 0 k-space (log)")
for j, (name, m) in enumerate(masks.items(), start=1):
    m = np.broadcast_to(np.asarray(m), gt.shape)
    axes[1, j].imshow(m, cmap="gray", interpolation="nearest")
    axes[1, j].set_title(f"{name}\nachieved {mri.acceleration(m, gt.shape):.2f}x")
for a in axes.ravel():
    a.set_xticks([])
    a.set_yticks([])
fig.savefig(OUT / "acquisition.png", dpi=90)

# %% [markdown]
# The SENSE operator A = mask . F . S (coil maps, then FFT, then mask) and its adjoint must
# satisfy <A x, y> = <x, A^H y> for any x and y; the FFT is unitary. These are the identities
# every data-consistency step of the networks relies on.

# %%
kx, ky = jax.random.split(jax.random.key(2))
x = jax.random.normal(kx, gt.shape) + 1j * jax.random.normal(jax.random.fold_in(kx, 1), gt.shape)
y = jax.random.normal(ky, (8, *gt.shape)) + 1j * jax.random.normal(
    jax.random.fold_in(ky, 1), (8, *gt.shape)
)
x, y = x.astype(jnp.complex64), y.astype(jnp.complex64)
m4 = masks["random 4x (8% centre)"]
lhs = jnp.vdot(mri.sense_forward(x, maps, m4), y)
rhs = jnp.vdot(x, mri.sense_adjoint(y, maps, m4))
print(f"<Ax, y> = {complex(lhs):.4f}   <x, A^H y> = {complex(rhs):.4f}")
print(f"||F x|| / ||x|| = {float(jnp.linalg.norm(mri.fft2c(x)) / jnp.linalg.norm(x)):.6f}")
summary["adjoint_relative_error"] = float(abs(lhs - rhs) / abs(lhs))

# %% [markdown]
# The job's acquisitions: 4x (8% centre) and 8x (4% centre) random Cartesian masks, as in the
# fastMRI challenge. The zero-filled reconstruction (A^H y with the true maps) aliases along the
# undersampled direction. The coil maps can also be **estimated** from the fully sampled centre
# (`mri.estimate_maps`: the low-resolution coil images over their root-sum-of-squares, the
# starting point E2E-VarNet refines). The estimate is zero where the coils see no signal, so it
# also blanks the noisy background: the whole-image SSIM jumps, the SSIM inside the brain barely
# moves. This is why every table here reports both.

# %%
acq = mri.acquire(gt, key=key)
s4 = acq["4x"]
zf = mri.sense_adjoint(s4.kspace, s4.maps, s4.mask)
est = mri.estimate_maps(s4.kspace, s4.mask)
zf_est = mri.sense_adjoint(s4.kspace, est, s4.mask)
# the estimate is defined up to a phase common to all coils: compare |maps| inside the head
err = jnp.abs(jnp.abs(est) - jnp.abs(s4.maps))[:, brain].mean() / jnp.abs(s4.maps)[:, brain].mean()
print(f"estimated |maps| vs true inside the brain: mean relative difference {float(err):.3f}")
for name, img in {"zero-filled (true maps)": zf, "zero-filled (estimated maps)": zf_est}.items():
    whole = float(mri.metrics.ssim(gt, jnp.abs(img)))
    inside = float(mri.metrics.ssim(gt, jnp.abs(img), brain))
    print(f"{name:>30}: SSIM {whole:.4f} (inside the brain {inside:.4f})")

# %% [markdown]
# ## 2. Compressed sensing
#
# `mri.cs_reconstruct` minimises 1/2 ||A x - y||^2 + lam_w ||W x||_1 + lam_tv TV(x) by monotone
# FISTA (the gradient of the smoothed TV is taken with `jax.grad`; the wavelet prox is exact
# because W is orthonormal). The regularisation weights are chosen by a sweep **on a simulated
# phantom** of the slice's size (the slice is for evaluation only), as the job does; then the
# objective must decrease monotonically on the slice.

# %%
iters = settings.cs_iterations
(lw, ltv), sweep = mri.choose_cs(
    gt.shape, iters, settings.cs_sweep, key=jax.random.fold_in(key, 300)
)
print(
    "phantom sweep SSIM:",
    {f"{a:g}/{b:g}": round(v, 4) for (a, b), v in zip(settings.cs_sweep, sweep, strict=True)},
)
print(f"chosen: lam_wavelet {lw:g}, lam_tv {ltv:g}")
res = mri.cs_reconstruct(s4.kspace, s4.mask, s4.maps, lam_wavelet=lw, lam_tv=ltv, iterations=iters)
obj = np.asarray(res.objective)
assert np.all(np.diff(obj) <= 1e-6 * abs(obj[0])), "MFISTA is monotone"
fig, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
ax.semilogy(obj - obj.min() + 1e-9 * abs(obj.min()))
ax.set_xlabel("iteration")
ax.set_ylabel("objective - min")
ax.set_title("CS on the T1 slice (4x)")
fig.savefig(OUT / "cs_convergence.png", dpi=90)
summary["cs"] = {
    "lam_wavelet": lw,
    "lam_tv": ltv,
    "iterations": iters,
    "objective": [float(obj[0]), float(obj[-1])],
}

# %% [markdown]
# ## 3. Learned reconstructions, trained on phantoms only
#
# Training data come from `mri.data.simulate_batch`: random ellipse phantoms with a smooth
# texture, simulated 8-coil acquisitions, masks drawn from a bank of 4x and 8x random masks, all
# generated by a jitted function of the step's key (no dataset on disk). Every network takes the
# multi-coil k-space, the mask and the coil maps and returns a complex image:
#
# - **U-Net**: an image-domain residual U-Net on the zero-filled SENSE image;
# - **RIM** (IndRNN cells): a recurrent network that updates the image from the gradient of the
#   data likelihood, A^H (A x - y), weights shared over its steps;
# - **CIRIM**: cascades of RIMs with their own weights and explicit data consistency between them;
# - **E2E-VarNet**: unrolled k-space updates with U-Net regularisers and a learned refinement of
#   the coil maps estimated from the centre (it ignores the true maps).
#
# `mri.train.train` minimises the L1 magnitude loss, checkpoints (`jaxaccel.runtime.Checkpointer`)
# and resumes, saying "resumed from step N" (`until=` stops early with a checkpoint; a later call
# finishes as one run would). `mri.train_models` trains the job's models with the job's keys
# (initial weights and batches drawn from `mri.job_key(key)`), so the checkpoints of
# `jaxaccel mri-recon` are reused here.

# %%
t = time.perf_counter()
models, info = mri.train_models(settings, key=key, folder=CKPT)
print(f"models ready in {time.perf_counter() - t:.0f} s")
fig, ax = plt.subplots(figsize=(6, 3), constrained_layout=True)
for name in models:
    losses = info[name]["losses"]
    ax.plot(
        np.convolve(losses, np.ones(5) / 5, mode="valid") if len(losses) > 10 else losses,
        label=name,
    )
ax.set_xlabel("step")
ax.set_ylabel(f"{info['unet']['loss']} (phantoms)")
ax.legend()
fig.savefig(OUT / "training.png", dpi=90)

# %% [markdown]
# ## 4. The real slice at 4x and 8x
#
# Each method reconstructs the same simulated k-space. Times are per slice on this machine after
# compilation (one warm-up call).

# %%
zf_fn = jax.jit(lambda k, m, maps: mri.sense_adjoint(k, maps, m))


def cs_fn(k, m, maps):
    return mri.cs_reconstruct(k, m, maps, lam_wavelet=lw, lam_tv=ltv, iterations=iters).image


methods = {"zero-filled": zf_fn, "CS": cs_fn, **{n: eqx.filter_jit(m) for n, m in models.items()}}
table, recons = {}, {}
for tag, s in acq.items():
    table[tag], recons[tag] = {}, {}
    for name, f in methods.items():
        out, secs = mri.timed(f, s.kspace, s.mask, s.maps)
        recons[tag][name] = np.abs(np.asarray(out))
        table[tag][name] = mri.score(gt, out, brain) | {"seconds": secs}
print(f"{'':>6} {'method':>12} {'SSIM':>7} {'brain':>7} {'PSNR':>6} {'ms':>8}")
for tag, rows in table.items():
    for name, r in rows.items():
        print(
            f"{tag:>6} {name:>12} {r['ssim']:7.4f} {r['ssim_brain']:7.4f} {r['psnr']:6.2f} {1e3 * r['seconds']:8.1f}"
        )
summary["metrics"] = table

# %%
names = list(methods)
fig, axes = plt.subplots(4, len(names), figsize=(2.3 * len(names), 9.4), constrained_layout=True)
for i, tag in enumerate(acq):
    for j, name in enumerate(names):
        img = recons[tag][name]
        axes[2 * i, j].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[2 * i, j].set_title(f"{tag} {name}\nSSIM {table[tag][name]['ssim']:.3f}", fontsize=8)
        axes[2 * i + 1, j].imshow(np.abs(img - gt), cmap="magma", vmin=0, vmax=0.25)
for a in axes.ravel():
    a.set_xticks([])
    a.set_yticks([])
fig.savefig(OUT / "reconstructions.png", dpi=90)

# %% [markdown]
# A zoom on the ventricles shows what the numbers summarise: zero-filling leaves aliasing and
# blur along the undersampled direction, CS removes the aliasing at the price of patchy texture,
# and the networks, trained on smooth ellipse phantoms, sharpen edges but do not invent the fine
# anatomy; at 8x with a 4% centre every method is left with a blurred image.

# %%
zoom = (slice(70, 170), slice(78, 178))
fig, axes = plt.subplots(
    2, len(names) + 1, figsize=(2.2 * (len(names) + 1), 5), constrained_layout=True
)
for i, tag in enumerate(acq):
    axes[i, 0].imshow(gt[zoom], cmap="gray", vmin=0, vmax=1)
    axes[i, 0].set_title("ground truth", fontsize=8)
    for j, name in enumerate(names, start=1):
        axes[i, j].imshow(recons[tag][name][zoom], cmap="gray", vmin=0, vmax=1)
        axes[i, j].set_title(f"{tag} {name}", fontsize=8)
for a in axes.ravel():
    a.set_xticks([])
    a.set_yticks([])
fig.savefig(OUT / "zoom.png", dpi=90)

# %% [markdown]
# ## 5. Where augmentation and posterior sampling plug in
#
# `mri.data.simulate_batch(batch, shape, bank, key=key)` is one jittable function of a key that
# returns a batch of `Sample`s (k-space, mask, maps, complex image, magnitude target): phantom ->
# smooth phase -> coils -> k-space -> noise -> mask. A physics-driven augmentation in the spirit
# of VORTEX (random motion as phase errors on k-space lines, extra noise, coil-map perturbations)
# acts between the k-space and the mask and returns the same `Sample`, so neither the training
# loop nor the models change; a conditional normalizing flow for posterior sampling consumes the
# same batches (condition: the zero-filled image or a network's estimate; target: `Sample.image`).
# Below, the batch the training step sees, and a toy augmentation (a random linear phase on
# each k-space line, the signature of in-plane motion) applied to it.

# %%
bank = mri.data.MaskBank.build(128, key=jax.random.key(3))
batch = jax.jit(lambda k: mri.data.simulate_batch(4, (128, 128), bank, key=k))(jax.random.key(4))


def motion_phase(key, sample, max_shift=1.0):
    """Shift each phase-encode line by a random sub-pixel amount (phase ramp along readout)."""
    h, w = sample.kspace.shape[-2:]
    shifts = jax.random.uniform(key, (w,), minval=-max_shift, maxval=max_shift)
    ramp = jnp.exp(-2j * jnp.pi * shifts[None, :] * (jnp.arange(h)[:, None] - h / 2) / h)
    return mri.Sample(
        sample.kspace * ramp.astype(jnp.complex64),
        sample.mask,
        sample.maps,
        sample.image,
        sample.target,
    )


aug = jax.vmap(motion_phase)(jax.random.split(jax.random.key(5), 4), batch)
fig, axes = plt.subplots(3, 4, figsize=(9, 7), constrained_layout=True)
for i in range(4):
    axes[0, i].imshow(np.asarray(batch.target[i]), cmap="gray", vmin=0, vmax=1)
    axes[1, i].imshow(
        np.abs(np.asarray(mri.sense_adjoint(batch.kspace[i], batch.maps[i], batch.mask[i]))),
        cmap="gray",
    )
    axes[2, i].imshow(
        np.abs(np.asarray(mri.sense_adjoint(aug.kspace[i], aug.maps[i], aug.mask[i]))), cmap="gray"
    )
axes[0, 0].set_ylabel("phantom")
axes[1, 0].set_ylabel("zero-filled")
axes[2, 0].set_ylabel("with motion phase")
for a in axes.ravel():
    a.set_xticks([])
    a.set_yticks([])
fig.savefig(OUT / "training_batch.png", dpi=90)

# %%
(OUT / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"figures and summary.json in {OUT}")
