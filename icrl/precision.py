"""Numeric precision of training and evaluation, ``train.precision`` (docs/architecture.md#training).

``fp32`` runs as written; ``bf16`` runs the model under ``torch.autocast(device, bfloat16)`` (matmuls
and attention in bf16, weights, optimiser and losses in fp32); ``auto`` chooses one at run time.

Why ``auto`` measures instead of reading CPU flags: whether bf16 autocast pays depends on the CPU
and on the model's width. An Intel CPU with AMX runs a width-256 AD model 2.2x faster in bf16 but
a width-64 one at 0.73x the speed (the casts cost more than the small matmuls save); one core of
an AMD Zen 4 (avx512_bf16, no AMX) trains the Dark Room AD model at 0.86x / 1.3x / 1.7x the fp32
speed at width 64 / 128 / 256 (``scripts/bench_precision.py``). So on a CPU ``auto`` times a few
forward+backward passes of the real model on a real batch under each precision, interleaved, and
keeps bf16 only when it wins by :data:`MARGIN`. The measurement leaves no trace: RNG states,
gradients and the train/eval mode are restored, and no optimiser steps.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable

import torch

PRECISIONS = ("auto", "fp32", "bf16")
MARGIN = 1.1  # bf16 must be this much faster: below it timing noise could pick either, and fp32 is more accurate


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a model runs in at ``precision`` (``fp32`` or ``bf16``) on ``device``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be fp32 or bf16 here (resolve auto first), got {precision!r}")


def resolve_precision(precision: str, device: torch.device, model: torch.nn.Module, batch: Any,
                      loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], *, backward: bool = True,
                      warmup: int = 1, repeats: int = 5, budget_s: float = 3.0,
                      margin: float | None = None) -> tuple[str, dict[str, Any]]:
    """``fp32`` or ``bf16`` for ``precision``, and the measurement behind an ``auto`` choice.

    Args:
        precision: ``auto``, ``fp32`` or ``bf16`` (the last two are returned as they are).
        device: where the model runs.
        model: the model, on ``device``.
        batch: what ``loss_fn`` runs on, or a function of no arguments that draws it (called only
            when a measurement runs, so a fixed precision costs nothing).
        loss_fn: ``loss_fn(model, batch)``: one training pass up to a scalar loss (``backward``),
            or one forward-only pass of evaluation (its result is ignored).
        backward: time forward+backward in train mode; False: forward only, eval mode, no grad.
        warmup: untimed rounds first (allocator, oneDNN/cuBLAS kernel selection).
        repeats: timed rounds; each round times both precisions, in alternating order.
        budget_s: stop after this many seconds once 3 timed rounds are in (a large model: a width-256
            Dark Room AD step takes ~3 s on one Zen 4 core, so its measurement takes ~20 s).
        margin: bf16 is chosen if it is at least this many times faster (None: :data:`MARGIN`).

    Returns:
        ``(choice, info)``: info holds ``choice`` and ``measured``, plus for a measurement
        ``fp32_ms`` and ``bf16_ms`` (median ms per pass) and ``speedup`` (fp32_ms / bf16_ms).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision, {"choice": precision, "measured": False}
    if device.type == "cuda":
        # Not measured: every GPU with native bf16 (Ampere on) has bf16 tensor cores, and bf16 autocast
        # is what CUDA training always used, so GPU runs keep their numerics; emulated bf16 is slow.
        choice = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32"
        return choice, {"choice": choice, "measured": False}
    ms = _median_ms(device, model, batch, loss_fn, backward, warmup, repeats, budget_s)
    speedup = ms["fp32"] / ms["bf16"]
    choice = "bf16" if speedup >= (MARGIN if margin is None else margin) else "fp32"
    return choice, {"choice": choice, "measured": True, "fp32_ms": ms["fp32"], "bf16_ms": ms["bf16"],
                    "speedup": speedup}


def _median_ms(device: torch.device, model: torch.nn.Module, batch: Any,
               loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], backward: bool, warmup: int, repeats: int,
               budget_s: float) -> dict[str, float]:
    """Median ms per pass under each precision, the passes of both interleaved (a machine that
    slows down or speeds up mid-measurement then shifts both alike); ``batch`` is drawn in here, so
    whatever RNG its drawing uses is restored too."""
    params = list(model.parameters())
    grads = [p.grad for p in params]  # kept aside: backward would accumulate into them in place
    cpu_rng = torch.get_rng_state()  # dropout and noisy gates draw from it; the run must not shift
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    was_training = model.training
    model.train(backward)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    try:
        batch = batch() if callable(batch) else batch
        start = time.perf_counter()
        for r in range(warmup + repeats):
            for name in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):  # neither always goes first
                seconds = _pass(device, model, batch, loss_fn, backward, name)
                if r >= warmup:
                    times[name].append(seconds)
            if r >= warmup + 2 and time.perf_counter() - start > budget_s:
                break
    finally:
        for param, grad in zip(params, grads):
            param.grad = grad
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        model.train(was_training)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def _pass(device: torch.device, model: torch.nn.Module, batch: Any,
          loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor], backward: bool, precision: str) -> float:
    """Seconds of one pass at ``precision``; the grads it leaves are dropped."""
    for param in model.parameters():
        param.grad = None
    with torch.set_grad_enabled(backward):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            out = loss_fn(model, batch)
        if backward:
            out.backward()  # outside autocast, as in training
        _sync(device)
        seconds = time.perf_counter() - t0
    for param in model.parameters():
        param.grad = None
    return seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(device)
