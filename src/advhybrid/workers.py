"""Several independent networks at once: one worker process each, the CPU threads shared.

train_targets, train_gan and generate_adversarial each work through a list of networks that
share nothing but their inputs. On a 2-core CPU two one-thread processes, each training its own
network, get more done than one two-thread process (bf16 steps, batch 100, measured: 1.25x for
ResNet-56, 1.68x for VGG19_bn at width 0.5, 1.16x for ResNet-50 at width 0.25; rerun with
bench/parallel_jobs.py): small convolutions leave a second thread idle much of the time. A
stage's `<section>.jobs` says how many run at once:

- `jobs: 1` (the default) runs every job in the stage's own process, one after another: exactly
  the loop the stages always had.
- `jobs: N` starts N processes ('spawn': fresh interpreters, so torch's thread pools and CUDA
  are never inherited half-initialised from a fork), each with the parent's threads // N. Each
  job keeps its own seed, data and checkpoint file, so results are those of `jobs: 1` up to
  floating-point differences from the thread count, and a rerun after a crash resumes each
  network from its own checkpoint. The parent receives the results in the stages' order and
  writes every output itself, as before.
- Under torchrun with several processes (`dist.nproc_per_node` > 1) every rank already works on
  every network together; `jobs` > 1 there is an error naming both keys (check_params stops it
  first; `jobs_param` again in the stage), never silently ignored.
- On a GPU `jobs` > 1 works (each worker its own CUDA context on the same device) but buys
  little: one network already keeps one GPU busy. The paper scale leaves it at 1.

A failing job raises its own exception in the parent, with the worker's traceback as its cause
and a note naming the network; the other workers are stopped (a rerun resumes them from their
checkpoints). Progress bars: each worker draws on its own terminal line.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

import torch
from torch import nn

from advhybrid import dist
from advhybrid.params import ParamsError, Section

T = TypeVar("T")


def jobs_param(p: Section) -> int:
    """`<section>.jobs`, checked: >= 1, and 1 under torchrun with several processes. A params
    file composed before the key existed has none: 1, the behaviour it was written for."""
    jobs = p.typed("jobs", int) if "jobs" in p else 1
    if jobs < 1:
        raise ParamsError(f"{p.source}: '{p.name}.jobs' must be >= 1, got {jobs}")
    if jobs > 1 and dist.world_size() > 1:
        raise ParamsError(
            f"{p.source}: '{p.name}.jobs'={jobs} with {dist.world_size()} torchrun processes "
            f"('dist.nproc_per_node'): each network already trains on every process; set '{p.name}.jobs' "
            "or 'dist.nproc_per_node' to 1")
    return jobs


def run(fn: Callable[..., T], jobs: Mapping[str, tuple], n: int) -> Iterator[tuple[str, T]]:
    """Yield (name, fn(*args)) for every `name: args` of `jobs`, in their order, computed `n` at a
    time in worker processes (`n` <= 1, or a single job: here, one after another, lazily, so
    the caller writes each result before the next job starts, as a plain loop would).

    `fn` must be importable by its module and name (a module-level function of a module, or of
    the script that was run). Arguments and results travel pickled by value (tensors included,
    not through shared memory); modules and tensors come back on the CPU."""
    n = min(n, len(jobs))
    if n <= 1:
        for name, args in jobs.items():
            yield name, fn(*args)
        return
    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(n, ctx, initializer=_init_worker, initargs=(
        max(1, torch.get_num_threads() // n), torch.backends.cudnn.benchmark, ctx.Value("i", 0), ctx.RLock()))
    todo, running, ok = iter(jobs.items()), {}, False  # running: submitted, not yet yielded, in order
    try:
        while True:
            # Only n jobs in flight: each one's arguments (a training set, say) are pickled when it starts.
            while sum(not f.done() for f in running.values()) < n and (job := next(todo, None)):
                running[job[0]] = pool.submit(_call, fn, pickle.dumps(job[1]))
            if not running:
                break
            # Wake on every job that ends, not only the next in order: a failure anywhere stops all.
            wait([f for f in running.values() if not f.done()], return_when=FIRST_COMPLETED)
            for name, future in running.items():
                if future.done() and future.exception() is not None:
                    _result(name, future)  # raises, naming the network
            for name in list(running):  # in the jobs' order, up to the first one still running
                if not running[name].done():
                    break
                yield name, _result(name, running.pop(name))
        ok = True
    finally:
        if not ok:  # a failure, or the caller stopped: the running jobs are stopped, not awaited
            _terminate(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the workers mid-job (what they lose is the work since their last checkpoint)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # older: no public way
        proc.terminate()


def _result(name: str, future: Future) -> Any:
    try:
        return pickle.loads(future.result())
    except BaseException as e:
        # The worker's traceback is the cause (concurrent.futures' _RemoteTraceback); the
        # exception keeps its type, so callers catch it as they would with jobs = 1.
        note = f"in the worker process for '{name}'" + (" (its traceback is printed above)" if e.__cause__ else "")
        if not hasattr(e, "add_note"):  # Python 3.10: no notes, so a new error names the network
            raise RuntimeError(f"{note}: {type(e).__name__}: {e}") from e
        e.add_note(note)
        raise


def _init_worker(threads: int, cudnn_benchmark: bool, slots: Any, lock: Any) -> None:
    """Give a fresh worker the parent's process-wide torch settings and its share of the threads."""
    torch.set_num_threads(threads)
    os.environ["ADVHYBRID_THREADS"] = str(threads)  # what set_threads() would give it
    torch.backends.cudnn.benchmark = cudnn_benchmark
    with slots.get_lock():
        slot, slots.value = slots.value, slots.value + 1
    # tqdm has no per-process default position: make this worker's bars default to its own
    # line, so N workers' bars do not overwrite each other; one lock serialises their redraws.
    from tqdm import std

    std.tqdm.__init__ = functools.partialmethod(std.tqdm.__init__, position=slot)
    std.tqdm.set_lock(lock)


def _call(fn: Callable[..., Any], args: bytes) -> bytes:
    return pickle.dumps(_to_cpu(fn(*pickle.loads(args))))


def _to_cpu(obj: Any) -> Any:
    """Modules and tensors on the CPU, in (nested) tuples, lists and dicts: a CUDA tensor cannot
    outlive the worker that made it."""
    if isinstance(obj, (nn.Module, torch.Tensor)):
        return obj.cpu()
    if type(obj) in (tuple, list):
        return type(obj)(_to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj
