"""Training speed of one BERT4Rec epoch on three dataset shapes, with a reference timed in the same run.

    .venv/bin/python bench/bench_train_epoch.py --shape ml1m            # the published ML-1M configuration
    taskset -c 0 .venv/bin/python bench/bench_train_epoch.py --shape ecommerce --steps 150
    # the same at the masking rate the defaults had before mask_prob auto (0.5 on this sparse shape)
    taskset -c 0 .venv/bin/python bench/bench_train_epoch.py --shape ecommerce --steps 150 \
        --set-both masking.mask_prob=0.3
    .venv/bin/python bench/bench_train_epoch.py --shape large --steps 40
    .venv/bin/python bench/bench_train_epoch.py --shape ecommerce --smoke   # seconds: the test suite runs it
    # the loss.kind auto threshold: sampled (auto's settings) against full softmax at a catalogue size
    taskset -c 0 .venv/bin/python bench/bench_train_epoch.py --shape ecommerce --items 20000 --steps 100 \
        --set loss.sampled_above=0
    .venv/bin/python bench/bench_train_epoch.py --shape ml1m --items 20000 --threads 1 --steps 12 \
        --reference softmax --set loss.sampled_above=0

Shapes and their configurations: ``bench/train_shapes.py``. The project's path is timed through the
real ``fit()`` (Lightning loop, bucketed batches, default loss ``auto``); validation is switched off.
Each step is timed from the end of the previous one, so batch loading counts. The first ``--warmup``
steps are not timed; ``--steps N`` times N steps and extrapolates the epoch (mean step x steps per
epoch), otherwise the whole first epoch is timed. The reference, timed the same way in this process:

* ``ml1m``: ``plain_bert4rec.PlainBERT4Rec`` (``nn.TransformerEncoder``, scores every position), same
  batches and masks, plain AdamW loop;
* ``ecommerce``, ``large``: this project's own full-softmax path (``loss.kind: softmax``), if it fits in
  memory.

``--repeat R`` alternates the two R times and keeps each one's fastest run (other processes on the
machine only ever slow a run down). Prints tokens/s, achieved GFLOP/s (analytic matmul FLOPs,
``train_shapes.step_flops``) and its share of the fp32 matmul peak measured here on the same thread
count, the CPU and whether it has native bf16, the speed-up, and one ``BENCH {...}`` JSON line last.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from common import GIB_BYTES, cpu_model, emit, matmul_flops, native_bf16
from train_shapes import SHAPES, Shape, plain_step_flops, runtime_key, source_sets, step_flops

BARS = {
    "ml1m": {"share_of_peak": 0.35, "speedup_vs_reference": 5.0},
    "ecommerce": {"speedup_vs_reference": 10.0},
}


@dataclass
class Timing:
    """Timed steps of one run: wall seconds, CPU seconds (all threads), non-padding tokens, FLOPs."""

    seconds: float
    cpu_seconds: float
    steps: int
    tokens: int
    flops: float
    steps_per_epoch: int

    @property
    def epoch_s(self) -> float:
        return self.seconds / self.steps * self.steps_per_epoch

    @property
    def epoch_cpu_s(self) -> float:
        return self.cpu_seconds / self.steps * self.steps_per_epoch


class StepClock(pl.Callback):
    """Times training steps end to end and stops the run after ``warmup + steps`` of them."""

    def __init__(self, warmup: int, steps: int | None, flops_of: Any) -> None:
        self.warmup, self.steps, self.flops_of = warmup, steps, flops_of
        self.records: list[tuple[float, float, int, float]] = []  # (seconds, cpu seconds, tokens, flops)
        self._last: tuple[float, float] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._last is None:
            self._last = (time.perf_counter(), time.process_time())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        b, width = batch.items.shape
        self.add(b, width, int((batch.items > 0).sum()), self.flops_of(b, width, pl_module.step_targets))
        if self.steps is not None and len(self.records) >= self.warmup + self.steps:
            trainer.should_stop = True

    def add(self, b: int, width: int, tokens: int, flops: float) -> None:
        """Close the step that ends now."""
        now = (time.perf_counter(), time.process_time())
        last = self._last or now
        self.records.append((now[0] - last[0], now[1] - last[1], tokens, flops))
        self._last = now

    def timing(self, steps_per_epoch: int) -> Timing:
        timed = self.records[self.warmup :] or self.records
        wall, cpu, tokens, flops = (sum(r[i] for r in timed) for i in range(4))
        return Timing(wall, cpu, len(timed), int(tokens), flops, steps_per_epoch)


def _config(
    shape: Shape, work: Path, args: argparse.Namespace, source: dict[str, Any], loss: str | None
) -> Any:
    from recsys.config import load_config

    sets: dict[str, Any] = {
        **source,
        "data.output_dir": str(work / "prepared"),
        "model.hidden_size": 64,
        "model.n_layers": 2,
        "model.n_heads": 2,
        **shape.sets,
        "train.max_epochs": 1,
        "train.val_every_n_epochs": 1000,  # no validation: only training steps are timed
        runtime_key("progress_bar"): "false",
        "train.output_dir": str(work / "run"),
        runtime_key("threads"): args.threads or shape.threads,
        runtime_key("precision"): args.precision,
        "tracking.enabled": "false",
    }
    if args.batch is not None:
        sets["train.batch_size"] = args.batch  # both runs
    overrides = [f"{k}={v}" for k, v in sets.items()] + args.set_both
    if loss is not None:
        overrides.append(f"loss.kind={loss}")
    else:  # --set applies to the project's run, not to the full-softmax reference
        overrides += args.set
    return load_config(None, overrides)


def _time_fit(cfg: Any, dataset: Any, args: argparse.Namespace) -> tuple[Timing, str]:
    """The project's path through ``fit()``; returns the timing and the loss ``auto`` resolved to."""
    from recsys.model.losses import resolve_loss
    from recsys.training.datamodule import SequenceDataModule
    from recsys.training.fit import fit

    loss = resolve_loss(cfg.loss, dataset.n_items)
    scored = dataset.n_items if loss.kind == "softmax" else getattr(loss, "n_negatives", 0) + 1
    m = cfg.model

    def flops_of(b: int, width: int, targets: int) -> float:
        return step_flops(b, width, targets, m.hidden_size, m.n_layers, m.ff_multiplier, scored)

    clock = StepClock(args.warmup, args.steps, flops_of)
    resolved = fit(cfg, dataset, write_bundle=False, callbacks=[clock]).config  # every auto resolved
    steps = SequenceDataModule(
        dataset, resolved.model, resolved.masking, resolved.train, cfg.eval
    ).train_batches_per_epoch()
    label = (
        loss.kind
        if loss.kind == "softmax"
        else f"{loss.kind}({getattr(loss, 'n_negatives', '')}, {getattr(loss, 'sampling', '')})"
    )
    return clock.timing(steps), label


def _time_plain(cfg: Any, dataset: Any, args: argparse.Namespace) -> Timing:
    """The plain reference on the same batches and masks, in a plain training loop."""
    import torch
    from plain_bert4rec import PlainBERT4Rec, plain_step

    from recsys.model.masking import mask_items
    from recsys.training.auto import resolve_auto
    from recsys.training.datamodule import SequenceDataModule

    cfg = resolve_auto(cfg, dataset)[0]  # the dropout and masking rate fit() resolves too
    m = cfg.model
    torch.set_num_threads(args.threads or SHAPES[args.shape].threads)
    torch.manual_seed(cfg.train.seed)
    dropout = m.resolved_dropout()[0]
    model = PlainBERT4Rec(
        dataset.n_items, m.hidden_size, m.n_layers, m.n_heads, m.resolved_max_len(), dropout
    )
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.train.optimizer.lr, betas=cfg.train.optimizer.betas
    )
    datamodule = SequenceDataModule(dataset, m, cfg.masking, cfg.train, cfg.eval)
    generator = torch.Generator().manual_seed(cfg.train.seed)
    clock = StepClock(args.warmup, args.steps, None)
    clock.on_train_batch_start(None, None, None, 0)  # type: ignore[arg-type]
    for batch in datamodule.train_dataloader():
        inputs, labels = mask_items(
            batch.items, n_items=dataset.n_items, cfg=cfg.masking, generator=generator
        )
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed"):
            plain_step(model, optimizer, inputs, labels)
        b, width = batch.items.shape
        flops = plain_step_flops(b, width, m.hidden_size, m.n_layers, m.ff_multiplier, dataset.n_items + 2)
        clock.add(b, width, int((batch.items > 0).sum()), flops)
        if args.steps is not None and len(clock.records) >= args.warmup + args.steps:
            break
    return clock.timing(datamodule.train_batches_per_epoch())


def _softmax_fits(n_items: int, hidden: int) -> tuple[bool, float]:
    """Whether full softmax's working set (logit blocks of 256 rows, dense table gradient and AdamW
    state) fits in half the memory available now; and that working set in GiB."""
    need = (3 * 256 * n_items * 4 + 5 * n_items * hidden * 4) / GIB_BYTES
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return need < int(line.split()[1]) * 1024 / GIB_BYTES / 2, need
    except OSError:
        pass
    return True, need


def _rate(t: Timing) -> str:
    speed = f"{t.tokens / t.seconds:,.0f} tokens/s, {t.flops / t.seconds / 1e9:.1f} GFLOP/s"
    return f"{t.epoch_s:,.1f} s/epoch ({speed}; CPU time {t.epoch_cpu_s:,.1f} s/epoch)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="ml1m")
    parser.add_argument("--steps", type=int, default=None, help="time this many steps and extrapolate")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5; smoke 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the shape's)")
    parser.add_argument("--precision", default="32", help="train precision (32, bf16-mixed, ...)")
    parser.add_argument("--loss", default=None, help="loss.kind of the project's run (default: the config's)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate project/reference runs this often")
    parser.add_argument("--reference", choices=["plain", "softmax", "none"], help="default: the shape's")
    parser.add_argument("--items", type=int, help="catalogue size of a synthetic log of the shape")
    parser.add_argument("--batch", type=int, help="train.batch_size of both runs (default: the shape's)")
    parser.add_argument("--set", action="append", default=[], help="config override of the project's run")
    parser.add_argument(
        "--set-both", action="append", default=[], help="config override of both runs (e.g. masking)"
    )
    parser.add_argument("--smoke", action="store_true", help="a few hundred users, 3 steps: seconds")
    args = parser.parse_args()
    if args.smoke:
        args.steps = args.steps or 3
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    shape = SHAPES[args.shape]
    threads = args.threads or shape.threads

    from recsys.data.pipeline import prepare
    from recsys.data.prepared import PreparedDataset

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = source_sets(shape, work, args.smoke, args.items)
        cfg = _config(shape, work, args, source, args.loss)
        dataset = PreparedDataset.load(prepare(cfg.data, plot=False).path)
        reference = args.reference or shape.reference
        fits, need_gib = _softmax_fits(dataset.n_items, cfg.model.hidden_size)
        if reference == "softmax" and not fits:
            reference = "none"
        ours: list[Timing] = []
        refs: list[Timing] = []
        for _ in range(max(1, args.repeat)):
            timing, loss_label = _time_fit(cfg, dataset, args)
            ours.append(timing)
            if reference == "plain":
                refs.append(_time_plain(cfg, dataset, args))
            elif reference == "softmax":
                refs.append(_time_fit(_config(shape, work, args, source, "softmax"), dataset, args)[0])
        peak = matmul_flops(threads, n=256 if args.smoke else 2048)
        n_items = dataset.n_items
    best = min(ours, key=lambda t: t.epoch_s)
    ref = min(refs, key=lambda t: t.epoch_s) if refs else None
    achieved = best.flops / best.seconds
    speedup = ref.epoch_s / best.epoch_s if ref else None
    names = {"plain": "plain nn.TransformerEncoder BERT4Rec", "softmax": "this project, loss.kind=softmax"}
    rows = [
        (
            "shape",
            f"{args.shape}{' (smoke)' * args.smoke}: {n_items:,} items, {best.steps_per_epoch} steps/epoch",
        ),
        ("CPU", f"{cpu_model()}, {threads} thread(s), native bf16: {'yes' if native_bf16() else 'no'}"),
        ("precision, loss", f"{args.precision}, {loss_label}"),
        ("timed", f"{best.steps} steps after {args.warmup} warm-up; best of {len(ours)}"),
        ("load average (1 min) at the end", f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"),
        ("this project", _rate(best)),
        ("fp32 matmul peak (measured)", f"{peak / 1e9:.1f} GFLOP/s -> share of peak {achieved / peak:.1%}"),
    ]
    if ref is not None:
        rows.append((f"reference: {names[reference]}", _rate(ref)))
        rows.append(
            (
                "speedup_vs_reference",
                f"{speedup:.2f}x wall ({ref.epoch_cpu_s / best.epoch_cpu_s:.2f}x CPU time)",
            )
        )
    else:
        why = f"full softmax needs ~{need_gib:.1f} GiB here" if not fits else "--reference none"
        rows.append(("reference", f"not run ({why})"))
    payload: dict[str, Any] = {
        "shape": args.shape,
        "smoke": args.smoke,
        "n_items": n_items,
        "epoch_s": round(best.epoch_s, 2),
        "tokens_per_s": round(best.tokens / best.seconds),
        "achieved_gflops": round(achieved / 1e9, 2),
        "peak_gflops": round(peak / 1e9, 2),
        "share_of_peak": round(achieved / peak, 4),
        "reference": reference,
        "reference_epoch_s": round(ref.epoch_s, 2) if ref else None,
        "speedup_vs_reference": round(speedup, 3) if speedup else None,
        "epoch_cpu_s": round(best.epoch_cpu_s, 2),
        "reference_epoch_cpu_s": round(ref.epoch_cpu_s, 2) if ref else None,
        "speedup_vs_reference_cpu": round(ref.epoch_cpu_s / best.epoch_cpu_s, 3) if ref else None,
        "precision": args.precision,
        "loss": loss_label,
        "cpu": cpu_model(),
        "native_bf16": native_bf16(),
        "threads": threads,
        "load_avg": round(os.getloadavg()[0], 1),
        "timed_steps": best.steps,
        "steps_per_epoch": best.steps_per_epoch,
    }
    bars = BARS.get(args.shape, {})
    payload["bars"] = bars
    payload["meets_bars"] = all((payload[k] or 0) >= v for k, v in bars.items()) if bars else None
    emit(f"train_epoch_{args.shape}", rows, payload)


if __name__ == "__main__":
    main()
