"""MRI reconstruction of the real T1 slice (``../shared/data/mri``) at 4x and 8x: quality and seconds
per slice for every method, ours and peers, on the same simulated k-space in the same process.

Inputs: ``science.mri.acquire`` (the arrays ``jaxaccel mri-recon`` reconstructs): the slice
with a smooth random phase, 8 birdcage coils, 1% complex noise, fastMRI random Cartesian masks
(4x with 8% centre, 8x with 4% centre), 256 x 256.

Methods:

- zero-filled (SENSE-combined with the true maps);
- ours, CS: ``cs_reconstruct`` (monotone FISTA, orthonormal db4 wavelet L1 + smoothed TV; the job's
  regularisation, chosen on a simulated phantom of the slice's size, never on the slice; the job's
  iterations);
- ours, CS wavelet-only vs **SigPy** ``L1WaveletRecon`` (NumPy/numba on CPU; accelerated proximal
  gradient (FISTA) with db4 wavelets, the same step 1/||A||^2 = 1 as ours): the same objective
  ``1/2 ||P F S x - y||^2 + lam ||W x||_1`` with the same ``lam`` (the job's wavelet weight times
  the zero-filled maximum, the scaling ``cs_reconstruct`` uses) and the same iteration count.
  Ours leaves the coarsest approximation band unpenalised and uses 4 periodic levels; SigPy
  penalises every coefficient (PyWavelets' zero-padded ``wavedecn``). Quality and time of both.
- ours, networks: each model of ``jaxaccel mri-recon --size small`` (trained on random phantoms
  only; checkpoints are read from ``--checkpoints``, default ``out/mri-recon/checkpoints``, and
  trained there first if missing);
- **fastMRI** ``VarNet`` (PyTorch on CPU, ``torch.no_grad``, as many threads as cores): forward
  time at its published size (12 cascades, 18 channels, 4 pools; sensitivity U-Net 8 channels,
  4 pools) and at ours' size (4 cascades, U-Nets of 8-16-32 channels with 3 poolings, a
  sensitivity U-Net of 4-8 channels). Its weights are random (the pretrained ones are a download): it is
  a speed peer only.

Times are medians after warm-up (`_common.time_paths`); JAX compile time is excluded.

The goal in issue 8: a learned model at least as good as CS in SSIM at <= 1/10 of CS's time; and
the IndRNN-RIM paper's claim of being 68% faster than CS is set against our IndRNN RIM / CS times.

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/mri.py [--quick]`` (needs the bench and
parity extras; fastMRI is installed ``--no-deps`` by ``scripts/setup.sh``: its declared
dependencies pull a CUDA build of PyTorch). Writes ``benchmarks/results/mri.json`` and the ``mri``
section of ``BENCHMARKS.md`` (``--quick``: tiny models, ``$TMPDIR``, BENCHMARKS.md untouched;
``--render JSON``: rebuild the section from a results file).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import _common as common  # noqa: E402

from science import mri  # noqa: E402

NAME = "mri"
TITLE = "MRI reconstruction (`benchmarks/mri.py`): T1 slice, 8 coils, 4x / 8x"


def sigpy_l1wavelet(s, lam: float, iterations: int):
    """SigPy's L1-wavelet reconstruction of a Sample (complex64 NumPy image)."""
    import sigpy.mri.app as app

    y = np.asarray(s.kspace).astype(np.complex64)
    mps = np.asarray(s.maps).astype(np.complex64)
    # alpha=1: the step ours takes (||A|| <= 1 for unit-RSS maps), which also skips SigPy's 30
    # power iterations that would otherwise estimate it
    return app.L1WaveletRecon(
        y, mps, lam, wave_name="db4", max_iter=iterations, alpha=1.0, show_pbar=False
    ).run()


def fastmri_varnet(size: str, our_varnet_cfg: dict):
    """fastMRI's VarNet (random weights) and a function of a Sample returning its image."""
    import torch
    from fastmri.models import VarNet

    torch.set_num_threads(common.cpu_cores())
    if size == "published":
        net = VarNet(num_cascades=12, sens_chans=8, sens_pools=4, chans=18, pools=4)
    else:
        net = VarNet(**our_varnet_cfg)
    net.eval()

    def prepare(s):
        k = np.asarray(s.kspace)
        kt = torch.from_numpy(np.stack([k.real, k.imag], -1).astype(np.float32))[None]
        m = np.broadcast_to(np.asarray(s.mask), k.shape[-2:])[0]  # (W,) column mask
        mt = torch.from_numpy(m.astype(bool)).reshape(1, 1, 1, -1, 1)
        return kt, mt

    def run(kt, mt):
        with torch.no_grad():
            return net(kt, mt).numpy()

    return prepare, run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.output_arguments(p, NAME, quick="tiny models (a few training steps), few reps")
    p.add_argument("--checkpoints", default=None, help="folder of the job's model checkpoints")
    args = common.parse_output_arguments(p, NAME)
    if args.render:
        report = json.loads(pathlib.Path(args.render).read_text())
        md = common.update_benchmarks_md(NAME, report, title=TITLE, intro=intro(report))
        print(f"updated {md}")
        return
    warnings.simplefilter("ignore", RuntimeWarning)
    t0, load_start = time.perf_counter(), common.loadavg()
    size = "tiny" if args.quick else "small"
    st = mri.JOB.load(size=size)
    ckpt = pathlib.Path(
        args.checkpoints
        or (
            pathlib.Path(tempfile.gettempdir()) / "mri_quick_ckpt"
            if args.quick
            else pathlib.Path("out/mri-recon/checkpoints")
        )
    )
    key = jax.random.key(0)
    gt, brain, _ = mri.load_slice()
    print(f"== models ({size}; checkpoints {ckpt})", flush=True)
    # the job's keys, so the job's checkpoints are reused (their fingerprint holds config and key)
    models, train_info = mri.train_models(st, key=key, folder=ckpt)
    train_info = {n: {k: v for k, v in t.items() if k != "losses"} for n, t in train_info.items()}
    iters = st.cs_iterations
    (lw, ltv), _ = mri.choose_cs(gt.shape, iters, st.cs_sweep, key=jax.random.fold_in(key, 300))
    reps = (
        dict(warmup=2, reps=3, min_reps=2, budget_s=2.0)
        if args.quick
        else dict(warmup=2, reps=7, min_reps=3, budget_s=30.0)
    )

    zf = jax.jit(lambda k, m, maps: mri.sense_adjoint(k, maps, m))
    nets = {name: eqx.filter_jit(model) for name, model in models.items()}
    vn = mri.MODELS_CONFIG["varnet"]
    ours_size_cfg = {
        "num_cascades": vn["cascades"],
        "chans": vn["channels"][0],
        "pools": len(vn["channels"]),  # ours (8, 16, 32): three poolings, a 64-channel bottom
        "sens_chans": vn["sens_channels"][0],
        "sens_pools": len(vn["sens_channels"]),
    }
    peers_vn = {tag: fastmri_varnet(tag, ours_size_cfg) for tag in ("published", "ours-size")}

    results: dict[str, Any] = {}
    for tag, s in mri.acquire(gt, key=key).items():
        print(f"== {tag}", flush=True)
        scale = float(jnp.abs(zf(s.kspace, s.mask, s.maps)).max())
        lam_sp = lw * scale
        paths = {
            "zero-filled": lambda s=s: zf(s.kspace, s.mask, s.maps),
            "CS": lambda s=s: (
                mri.cs_reconstruct(
                    s.kspace, s.mask, s.maps, lam_wavelet=lw, lam_tv=ltv, iterations=iters
                ).image
            ),
            "CS wavelet-only": lambda s=s: (
                mri.cs_reconstruct(
                    s.kspace, s.mask, s.maps, lam_wavelet=lw, lam_tv=0.0, iterations=iters
                ).image
            ),
            "SigPy L1-wavelet": lambda s=s, lam=lam_sp: sigpy_l1wavelet(s, lam, iters),
            **{name: (lambda f=f, s=s: f(s.kspace, s.mask, s.maps)) for name, f in nets.items()},
        }
        for vtag, (prep, fwd) in peers_vn.items():
            kt, mt = prep(s)
            paths[f"fastMRI VarNet ({vtag})"] = lambda fwd=fwd, kt=kt, mt=mt: fwd(kt, mt)
        timings = common.time_paths(paths, **reps)
        rows = {}
        for name, fn in paths.items():
            out = np.asarray(fn())
            entry = {"seconds": timings[name].median_ms / 1e3, "timing": timings[name].note}
            if not name.startswith("fastMRI"):  # random weights: no quality to report
                entry |= mri.score(gt, out, brain)
            rows[name] = entry
            q = f"SSIM {entry['ssim']:.4f} PSNR {entry['psnr']:.2f}" if "ssim" in entry else ""
            print(f"  {name:>28}: {entry['seconds'] * 1e3:9.1f} ms  {q}", flush=True)
        results[tag] = {"sigpy_lambda": lam_sp, "methods": rows}

    report = {
        "loadavg_start": load_start,
        "loadavg_end": common.loadavg(),
        "commit": common.git_commit("science/mri"),
        "mode": "quick (smoke run, not a measurement)" if args.quick else "full",
        "command": "python benchmarks/mri.py" + (" --quick" if args.quick else ""),
        "size": size,
        "cs": {"lam_wavelet": lw, "lam_tv": ltv, "iterations": iters},
        "training": train_info,
        "acquisitions": results,
        "total_wall_s": round(time.perf_counter() - t0, 1),
    }
    rows = make_rows(report, list(models))
    path = pathlib.Path(args.out) if args.out else common.RESULTS / f"{NAME}.json"
    report = common.write_results(NAME, rows, extra=common.json_clean(report), path=path)
    print()
    common.print_table(rows, max_note=90)
    print(f"\nwrote {path} ({report['total_wall_s']} s)")
    if not args.no_md:
        md = common.update_benchmarks_md(NAME, report, title=TITLE, intro=intro(report))
        print(f"updated {md}")


def make_rows(report: dict, nets: list[str]) -> list[dict]:
    rows = []
    for tag, acq in report["acquisitions"].items():
        m = acq["methods"]
        cs, csw, sp = m["CS"], m["CS wavelet-only"], m["SigPy L1-wavelet"]
        case = f"T1 slice {tag}"
        rows.append(
            common.row(
                case,
                "CS wavelet L1: s / slice",
                csw["seconds"],
                "SigPy L1WaveletRecon",
                sp["seconds"],
                note=f"same lam, {report['cs']['iterations']} iterations; SSIM ours "
                f"{csw['ssim']:.4f} vs SigPy {sp['ssim']:.4f}",
            )
        )
        rows.append(
            common.row(
                case,
                "CS wavelet L1: SSIM",
                csw["ssim"],
                "SigPy L1WaveletRecon",
                sp["ssim"],
                better="higher",
                note=f"PSNR ours {csw['psnr']:.2f} dB vs SigPy {sp['psnr']:.2f} dB",
            )
        )
        if "varnet" in m:
            for vtag in ("ours-size", "published"):
                peer = m[f"fastMRI VarNet ({vtag})"]
                rows.append(
                    common.row(
                        case,
                        f"VarNet forward: s / slice (fastMRI {vtag})",
                        m["varnet"]["seconds"],
                        f"fastMRI VarNet ({vtag}, PyTorch CPU)",
                        peer["seconds"],
                        note="ours: our VarNet, trained; peer: random weights (speed only)"
                        + (", 12 cascades x 18 chans" if vtag == "published" else ""),
                    )
                )
        for name in nets:
            r = m[name]
            rows.append(
                common.row(
                    case,
                    f"{name}: SSIM vs our CS",
                    r["ssim"],
                    "ours, CS (wavelet + TV)",
                    cs["ssim"],
                    better="higher",
                    note=f"time {r['seconds'] * 1e3:.0f} ms vs CS {cs['seconds'] * 1e3:.0f} ms "
                    f"({cs['seconds'] / r['seconds']:.1f}x faster); brain SSIM "
                    f"{r['ssim_brain']:.4f} vs {cs['ssim_brain']:.4f}",
                )
            )
    return rows


def intro(report: dict) -> str:
    lines = [
        "All methods reconstruct the same simulated 8-coil k-space of the real T1 slice "
        "(`jaxaccel mri-recon`'s acquisitions). Networks were trained on random phantoms only "
        f"(size `{report['size']}`). Per-method SSIM / PSNR / seconds (medians after warm-up):",
        "",
        "| acquisition | method | SSIM | SSIM brain | PSNR (dB) | s / slice |",
        "|---|---|---|---|---|---|",
    ]
    for tag, acq in report["acquisitions"].items():
        for name, r in acq["methods"].items():
            q = (
                f"{r['ssim']:.4f} | {r['ssim_brain']:.4f} | {r['psnr']:.2f}"
                if "ssim" in r
                else "— | — | —"
            )
            lines.append(f"| {tag} | {name} | {q} | {r['seconds']:.3f} |")
    lines.append("")
    lines += verdicts(report)
    return "\n".join(lines)


def verdicts(report: dict) -> list[str]:
    out = []
    for tag, acq in report["acquisitions"].items():
        m = acq["methods"]
        cs = m["CS"]
        nets = {k: v for k, v in m.items() if k in mri.MODELS_CONFIG}
        ok = [
            k
            for k, v in nets.items()
            if v["ssim"] >= cs["ssim"] and v["seconds"] * 10 <= cs["seconds"]
        ]
        out.append(
            f"- {tag}: goal (a network with SSIM >= CS at <= 1/10 of CS's time): "
            + (f"met by {', '.join(ok)}" if ok else "not met")
            + "; "
            + ", ".join(
                f"{k} SSIM {v['ssim']:.3f} at {cs['seconds'] / v['seconds']:.1f}x CS speed"
                for k, v in nets.items()
            )
            + f" (CS SSIM {cs['ssim']:.3f}, {cs['seconds']:.2f} s)."
        )
        best = max(nets, key=lambda k: nets[k]["ssim_brain"], default=None)
        if best is not None:
            out.append(
                f"- {tag}: inside the brain the best network is {best} (SSIM "
                f"{nets[best]['ssim_brain']:.3f}) against CS's {cs['ssim_brain']:.3f}: "
                + (
                    "CS stays ahead."
                    if cs["ssim_brain"] > nets[best]["ssim_brain"]
                    else "ahead of CS."
                )
            )
        if "rim" in m:
            faster = 100 * (1 - m["rim"]["seconds"] / cs["seconds"])
            out.append(
                f"- {tag}: the IndRNN RIM is {faster:.0f}% faster than our CS "
                "(the IndRNN-RIM paper reports 68% faster than CS)."
            )
    return out


if __name__ == "__main__":
    main()
