"""`replay(workdir, options)`: every checkpoint of a run against its base, incrementally.

    result = replay("/tmp/rldyn/two_phase", ReplayOptions(n=64, probe=128))
    result.computed          # steps computed by this call (0 = the base); the rest came from the cache

For each model not yet in DIR/replay/replay.jsonl (with the same settings): sample the probe set
(`probe.Prober`), score its responses under the base and the base's responses under it (cross-model
PPL, k3 KL), count its weight update against the base (`rldyn.metrics.sparsity`), append one line.
Then rebuild passk.json, sparsity.json, report.md and the plots from all cached lines (`report.py`).

The base's samples are kept in DIR/replay/base_samples.npz so later checkpoints can be scored on them
without resampling the base. Models load onto the run's mesh when the present devices allow it, else
onto a pure data-parallel mesh of all present devices.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import logging

from rldyn import launch
from rldyn import model as model_lib
from rldyn import parallel
from rldyn import workdir as workdir_lib
from rldyn.config import Config
from rldyn.workdir import Workdir
from rldyn.metrics import passk as passk_lib
from rldyn.metrics import sparsity as sparsity_lib
from rldyn.replay import cache as cache_lib
from rldyn.replay import probe as probe_lib
from rldyn.replay.progress import Progress

VERSION = 1  # bump when what a record holds changes, to invalidate caches
BASE_STEP = 0


@dataclasses.dataclass(frozen=True)
class ReplayOptions:
  """What to replay and how. Validates itself."""

  steps: tuple[int, ...] | None = None  # checkpoints to replay (None = every checkpoint present)
  n: int = 64  # samples per probe problem
  ks: tuple[int, ...] | None = None  # pass@k grid (None = 1, 2, 4, … ≤ n and n)
  probe: int = 128  # held-out probe problems
  probe_seed: int | None = None  # which held-out set (None = the run's task.eval_seed + 1)
  seed: int = 0  # sampling key of the replay (the same for every checkpoint)
  batch_size: int = 512  # rows per sampling / scoring call
  compare: str = ""  # another run's workdir: overlap of the updated weights at common steps
  atols: tuple[float, ...] = sparsity_lib.ATOLS  # sparsity tolerance sweep
  rank_rtol: float | None = None  # SVD rank tolerance (None = max(shape) · ε_fp32)
  plots: bool = True  # write PNG plots (needs matplotlib)
  progress: bool = True  # progress bar on stderr
  data_dir: str | None = None  # TFDS data dir for the probe set (None = the run's)
  max_new_tokens: int | None = None  # generation budget (None = the run's); another writes replay/max_new_tokens_N/

  def __post_init__(self):
    if self.n < 1:
      raise ValueError(f"n must be >= 1, got {self.n}")
    if self.probe < 1:
      raise ValueError(f"probe must be >= 1, got {self.probe}")
    if self.ks is not None:
      bad = [k for k in self.ks if not 1 <= k <= self.n]
      if bad or not self.ks:
        raise ValueError(f"every k must be in [1, n={self.n}], got {list(self.ks)}")
    if self.steps is not None and any(s < 1 for s in self.steps):
      raise ValueError(f"checkpoint steps are >= 1 (0 is the base, always included), got {self.steps}")
    if any(not a >= 0 for a in self.atols):
      raise ValueError(f"atols must be >= 0, got {self.atols}")
    if self.max_new_tokens is not None and self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1 (or None for the run's), got {self.max_new_tokens}")

  def k_grid(self) -> list[int]:
    return sorted(set(self.ks)) if self.ks else passk_lib.k_grid(self.n)


@dataclasses.dataclass
class ReplayResult:
  """What a replay produced: all records (cached and new), what it computed, where it wrote."""

  out_dir: str
  records: dict[int, dict]  # step -> checkpoint record (0 = base)
  comparisons: dict[int, dict]  # step -> overlap record against options.compare
  computed: list[int]  # steps computed by this call
  compared: list[int]  # comparison steps computed by this call
  files: list[str]
  seconds: float
  compiled: dict[str, int] = dataclasses.field(default_factory=dict)


def replay_dir(workdir: str, max_new_tokens: int | None = None) -> str:
  """Where a replay of `workdir` writes: replay/, or replay/max_new_tokens_N/ at another budget."""
  return Workdir(workdir).replay_out_dir(max_new_tokens)


def with_budget(cfg: Config, max_new_tokens: int | None) -> tuple[Config, int | None]:
  """(cfg with sampling.max_new_tokens = max_new_tokens, the budget if it differs from the run's)."""
  if max_new_tokens is None or max_new_tokens == cfg.sampling.max_new_tokens:
    return cfg, None
  cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, max_new_tokens=max_new_tokens))
  launch.check_generation_fits(cfg)  # the probe's own prompt width is checked exactly by the Prober
  return cfg, max_new_tokens


def make_mesh(cfg: Config):
  """The run's mesh if the present devices allow it, else pure data parallel over all of them."""
  try:
    return parallel.make_mesh(cfg.mesh)
  except ValueError as e:
    logging.warning("run's mesh does not fit the present devices (%s); using data parallel", e)
    return parallel.make_mesh(parallel.MeshConfig(-1, 1, 1))


def settings_for(cfg: Config, opts: ReplayOptions, batch: int) -> dict:
  """Everything a cached record depends on (a change recomputes every model)."""
  return cache_lib.canonical({
      "version": VERSION, "probe": opts.probe,
      "probe_seed": cfg.task.eval_seed + 1 if opts.probe_seed is None else opts.probe_seed,
      "n": opts.n, "seed": opts.seed, "batch": batch, "sampling": dataclasses.asdict(cfg.sampling),
      "task": {"name": cfg.task.name, "options": cfg.task.options}, "atols": list(opts.atols),
      "rank_rtol": opts.rank_rtol,
  })


def embed_axes(cfg: Config) -> dict[str, int]:
  """{leaf path: position of its `embed` logical axis} for leaves with > 2 dims (their matrix view)."""
  flat, _ = jax.tree_util.tree_flatten_with_path(
      model_lib.logical_axes(cfg.model), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  out = {}
  for path, spec in flat:
    spec = tuple(spec)
    if len(spec) > 2 and "embed" in spec:
      out["/".join(str(getattr(k, "key", k)) for k in path)] = spec.index("embed")
  return out


def probe_problems(task, size: int, seed: int, data_dir: str | None) -> list:
  """The held-out probe set: the TFDS eval set of (size, seed), or the same problems generated directly
  where tensorflow-datasets is not installed (e.g. a bare accelerator image)."""
  from rldyn.tasks import evalsets  # pylint: disable=g-import-not-at-top
  try:
    return evalsets.load_eval_set(task, size, seed, data_dir)
  except ImportError:
    logging.warning("tensorflow-datasets not installed: generating the probe set directly")
    return evalsets.generate_eval_problems(task, size, seed)


class _Models:
  """Lazily loaded pieces: mesh, probe set, compiled prober, base params and base samples."""

  def __init__(self, workdir: str, cfg: Config, task, opts: ReplayOptions, out_dir: str, settings: dict,
               mesh):
    self.workdir, self.cfg, self.task, self.opts, self.out_dir = workdir, cfg, task, opts, out_dir
    self.settings, self.mesh = settings, mesh
    self.embed_axes = embed_axes(cfg)
    self.problems = probe_problems(task, opts.probe, settings["probe_seed"],
                                   opts.data_dir or cfg.task.data_dir or None)
    self.prober = probe_lib.Prober(cfg, task, self.problems, opts.n, self.mesh, opts.batch_size,
                                   opts.seed)
    self.base = Workdir(workdir).base_params(cfg.model, self.mesh)
    self._base_samples = None

  @property
  def samples_path(self) -> str:
    return os.path.join(self.out_dir, workdir_lib.REPLAY_BASE_SAMPLES)

  def base_samples(self, progress) -> tuple[np.ndarray, np.ndarray]:
    """(tokens_RN, mask_RN) of the base's probe samples: from base_samples.npz, else sampled now."""
    if self._base_samples is None and os.path.exists(self.samples_path):
      with np.load(self.samples_path, allow_pickle=False) as z:
        if json.loads(str(z["settings"])) == self.settings:
          self._base_samples = (z["tokens_RN"], z["mask_RN"])
    if self._base_samples is None:
      s = self.prober.sample(self.base, progress)
      self._save_base_samples(s)
    return self._base_samples

  def _save_base_samples(self, s: probe_lib.ProbeSamples) -> None:
    self._base_samples = (s.tokens_RN, s.mask_RN)
    tmp = self.samples_path + f".tmp{os.getpid()}.npz"
    np.savez_compressed(tmp, tokens_RN=s.tokens_RN, mask_RN=s.mask_RN,
                        settings=np.array(json.dumps(self.settings, sort_keys=True)))
    os.replace(tmp, self.samples_path)

  def record(self, step: int, params, progress) -> dict:
    """The replay record of one model (step 0 = the base, `params` = self.base)."""
    t0 = time.time()
    self.prober.timings = {}
    samples = self.prober.sample(params, progress)
    if step == BASE_STEP:
      self._save_base_samples(samples)
      base_logp = this_on_base = samples.logp_RN * samples.mask_RN
      base_mask = samples.mask_RN
      weights = None
    else:
      base_tokens, base_mask = self.base_samples(progress)
      base_logp = self.prober.score(self.base, samples.tokens_RN, samples.mask_RN, progress)
      this_on_base = self.prober.score(params, base_tokens, base_mask, progress)
      tw = time.time()
      weights = sparsity_lib.update_sparsity(self.base, params, self.opts.atols,
                                             embed_axes=self.embed_axes, rtol=self.opts.rank_rtol)
      self.prober.timings["weights"] = time.time() - tw
    stats = probe_lib.probe_stats(samples, base_logp, this_on_base, base_mask)
    timings = {**self.prober.timings, "total": time.time() - t0}
    return {
        "kind": cache_lib.CHECKPOINT, "step": step, "n": self.opts.n, "problems": len(self.problems),
        "per_problem_correct": samples.per_problem_correct(self.opts.n), "probe": stats,
        "weights": weights, "examples": probe_lib.examples(samples, self.problems, self.opts.n),
        "time_s": timings,
    }


def _load_checkpoint(workdir: str, step: int, cfg: Config, mesh):
  try:
    return Workdir(workdir).checkpoint_params(step, cfg, mesh)
  except Exception as e:  # pylint: disable=broad-except  (a checkpoint deleted or half-written)
    logging.warning("checkpoint %d of %s unreadable, skipped: %r", step, workdir, e)
    return None


def _check_compatible(cfg: Config, other_cfg: Config, other: str) -> None:
  if other_cfg.model != cfg.model:
    raise ValueError(f"--compare={other} has a different model ({other_cfg.model}) than this run "
                     f"({cfg.model}); overlap needs the same parameter shapes")


def _trees_equal(a, b) -> bool:
  fa, fb = sparsity_lib.flatten(a), sparsity_lib.flatten(b)
  return fa.keys() == fb.keys() and all(bool(jax.numpy.array_equal(fa[k], fb[k])) for k in fa)


def replay(workdir: str, opts: ReplayOptions = ReplayOptions()) -> ReplayResult:
  """Replays the base and the checkpoints of the run in `workdir`; writes DIR/replay/. See module doc."""
  t_start = time.time()
  workdir = os.path.abspath(workdir)
  cfg, task = Workdir(workdir).load_config()
  cfg, budget = with_budget(cfg, opts.max_new_tokens)
  out_dir = replay_dir(workdir, budget)
  os.makedirs(out_dir, exist_ok=True)
  mesh = make_mesh(cfg)
  batch = probe_lib.effective_batch(opts.batch_size, opts.probe * opts.n,
                                    parallel.data_parallel_size(mesh))
  settings = settings_for(cfg, opts, batch)
  cache = cache_lib.ReplayCache(os.path.join(out_dir, workdir_lib.REPLAY_CACHE), settings)
  if cache.stale():
    logging.info("%d cached replay line(s) were computed with other settings; ignoring them",
                 cache.stale())
  done = cache.checkpoints()
  available = Workdir(workdir).checkpoint_steps()
  if opts.steps is None:
    wanted = available
  else:
    missing = sorted(set(opts.steps) - set(available) - set(done))
    if missing:
      raise ValueError(f"no checkpoint for step(s) {missing} in {workdir}/checkpoints "
                       f"(present: {available}; cached: {sorted(s for s in done if s)})")
    wanted = sorted(set(opts.steps))
  todo = [s for s in [BASE_STEP] + list(wanted) if s not in done]

  other = os.path.abspath(opts.compare) if opts.compare else ""
  todo_compare: list[int] = []
  if other:
    other_cfg, _ = Workdir(other).load_config()
    _check_compatible(cfg, other_cfg, other)
    have = cache.comparisons(other)
    common = sorted(set(wanted) & set(Workdir(other).checkpoint_steps()))
    todo_compare = [s for s in common if s not in have]

  computed, compared = [], []
  compiled = {}
  if todo or todo_compare:
    models = _Models(workdir, cfg, task, opts, out_dir, settings, mesh)
    units_per = models.prober.num_batches
    total = sum(units_per if s == BASE_STEP else 3 * units_per for s in todo)
    if BASE_STEP not in todo and any(s != BASE_STEP for s in todo) and not os.path.exists(
        models.samples_path):
      total += units_per
    bar = Progress(total + len(todo_compare), enabled=opts.progress)
    other_base = None
    if todo_compare:
      other_base = Workdir(other).base_params(other_cfg.model, models.mesh)
      same_base = _trees_equal(models.base, other_base)
    for step in sorted(set(todo) | set(todo_compare)):
      label = "base" if step == BASE_STEP else f"step {step}"
      bar.update(0, label)
      params = models.base if step == BASE_STEP else _load_checkpoint(workdir, step, cfg, models.mesh)
      if params is None:
        continue
      if step in todo:
        rec = models.record(step, params, lambda u, label=label: bar.update(u, label))
        cache.append(rec)
        computed.append(step)
      if step in todo_compare:
        theirs = _load_checkpoint(other, step, other_cfg, models.mesh)
        if theirs is not None:
          ov = sparsity_lib.seed_overlap(models.base, params, theirs, opts.atols,
                                         base2=None if same_base else other_base)
          cache.append({"kind": cache_lib.COMPARE, "other": other, "step": step,
                        "same_base": same_base, "overlap": ov})
          compared.append(step)
        bar.update(1, label)
      del params
    bar.close()
    compiled = models.prober.compiled_variants()

  records = cache.checkpoints()
  if opts.steps is not None:
    records = {s: r for s, r in records.items() if s == BASE_STEP or s in wanted}
  comparisons = cache.comparisons(other) if other else {}
  comparisons = {s: r for s, r in comparisons.items() if s in records}
  from rldyn.replay import report  # pylint: disable=g-import-not-at-top
  files = report.write_all(out_dir, workdir, records, comparisons, opts, settings, other=other)
  return ReplayResult(out_dir=out_dir, records=records, comparisons=comparisons, computed=computed,
                      compared=compared, files=files, seconds=time.time() - t_start, compiled=compiled)


def parse_ints(text: str | None) -> tuple[int, ...] | None:
  """'' / 'all' → None; '100,200' → (100, 200)."""
  if not text or text.strip() == "all":
    return None
  return tuple(int(s) for s in text.split(",") if s.strip())
