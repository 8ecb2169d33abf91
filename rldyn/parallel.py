"""Device mesh, logical-axis rules and shardings (the whole sharding vocabulary of rldyn).

The mesh has three axes, as in flax's lm1b example: `data` (pure data parallel), `fsdp` (data parallel
with parameters sharded over it) and `tensor` (model parallel). Weights carry logical axis names
(`rldyn.model.logical_axes`); a short rule table maps them to mesh axes:

    batch    -> (data, fsdp)      activations and rollouts are split over every data-parallel device
    embed    -> fsdp              parameters are sharded ZeRO-3 style over fsdp
    mlp, heads, kv_heads, vocab -> tensor
    head_dim -> replicated

A rule whose mesh axes do not divide the dimension falls back to replication for that dimension, so
tiny test models run on any mesh. `jax.jit` with these NamedShardings is pjit: on a TPU pod the same
code runs multi-controller after `init_distributed()`.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
BATCH = ("data", "fsdp")

DEFAULT_RULES = (
    ("batch", BATCH),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh shape; -1 on one axis means 'all the remaining devices'."""

  data: int = -1
  fsdp: int = 1
  tensor: int = 1

  def resolve(self, num_devices: int) -> tuple[int, int, int]:
    dims = [self.data, self.fsdp, self.tensor]
    if sum(d == -1 for d in dims) > 1:
      raise ValueError(f"mesh: at most one of data/fsdp/tensor may be -1, got {dims}")
    if any(d == 0 or d < -1 for d in dims):
      raise ValueError(f"mesh: sizes must be positive or -1, got {dims}")
    known = math.prod(d for d in dims if d != -1)
    if num_devices % known:
      raise ValueError(f"mesh {dims} does not divide the {num_devices} available devices; "
                       f"set mesh.data/mesh.fsdp/mesh.tensor so their product is {num_devices}")
    dims = [num_devices // known if d == -1 else d for d in dims]
    if math.prod(dims) != num_devices:
      raise ValueError(f"mesh {dims} uses {math.prod(dims)} devices but {num_devices} are present; "
                       "set one axis to -1 to fill the rest")
    return tuple(dims)


def make_mesh(cfg: MeshConfig, devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  shape = cfg.resolve(len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def _mesh_size(mesh: Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def logical_to_mesh(spec: PartitionSpec, shape, mesh: Mesh, rules=DEFAULT_RULES) -> PartitionSpec:
  """Maps a PartitionSpec of logical names to mesh axes, replicating dims the axes don't divide."""
  table = dict(rules)
  out, used = [], set()
  for name, dim in zip(tuple(spec), shape):
    axes = table.get(name) if name is not None else None
    flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    flat = tuple(a for a in flat if a not in used and mesh.shape[a] > 1)
    if not flat or dim % _mesh_size(mesh, flat):
      out.append(None)
      continue
    used.update(flat)
    out.append(flat[0] if len(flat) == 1 else flat)
  return PartitionSpec(*out)


def tree_shardings(mesh: Mesh, abstract_tree, logical_tree, rules=DEFAULT_RULES):
  """NamedShardings for a tree of arrays given the matching tree of logical PartitionSpecs."""
  return jax.tree.map(
      lambda x, spec: NamedSharding(mesh, logical_to_mesh(spec, x.shape, mesh, rules)),
      abstract_tree, logical_tree)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading axis over every data-parallel device, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_batch(mesh: Mesh, batch: dict) -> dict:
  """Places a host batch (numpy arrays of the *global* batch, leading dim = batch) on the mesh.

  In a multi-process run every process passes the same global batch and places only the rows its own
  devices hold (`place_rows`); `place_rows` is the API for a process that built only its rows.
  """
  if jax.process_count() == 1:
    return {k: jax.device_put(np.asarray(v), batch_sharding(mesh, np.ndim(v))) for k, v in batch.items()}
  n = len(next(iter(batch.values())))
  rows = process_rows(mesh, n)
  return place_rows(mesh, {k: np.asarray(v)[rows] for k, v in batch.items()}, n)


# ---- multi-process (multi-controller) data ----------------------------------------------------------------
# A batch-sharded array of n rows is split over the data-parallel devices in order; the rows held by one
# process's devices are one contiguous block (`process_rows`). Each process builds, places, fetches and
# scores only that block; values every process needs (metrics, a few per-row scalars) are gathered.


def process_rows(mesh: Mesh, n: int, multiple: int = 1) -> slice:
  """The contiguous rows [start, stop) of a batch-sharded n-row array held by this process's devices.

  `multiple`: every block must be whole units of that many rows (GRPO groups stay on one process).
  """
  index = batch_sharding(mesh, 1).addressable_devices_indices_map((n,))
  starts = sorted({(s[0].start or 0, n if s[0].stop is None else s[0].stop) for s in index.values()})
  start, stop = starts[0][0], starts[-1][1]
  covered = sum(b - a for a, b in starts)
  if covered != stop - start:
    raise ValueError(f"process {jax.process_index()} holds non-contiguous rows {starts} of a {n}-row batch; "
                     "order the mesh's data axes so each process's devices are adjacent")
  if start % multiple or stop % multiple:
    raise ValueError(f"process {jax.process_index()} holds rows [{start}, {stop}) of a {n}-row batch, not "
                     f"whole groups of {multiple}: make rl.prompts_per_step a multiple of the process count")
  return slice(start, stop)


def place_rows(mesh: Mesh, local: dict, n: int) -> dict:
  """This process's rows (`process_rows(mesh, n)`) of each array -> global n-row batch-sharded arrays."""
  if jax.process_count() == 1:
    return {k: jax.device_put(np.asarray(v), batch_sharding(mesh, np.ndim(v))) for k, v in local.items()}
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v),
                                                    (n,) + np.shape(v)[1:])
          for k, v in local.items()}


def fetch_rows(x: jax.Array, rows: slice) -> np.ndarray:
  """Rows `rows` of a global array, read from this process's own devices (no cross-host transfer)."""
  if x.is_fully_addressable:
    return np.asarray(jax.device_get(x))[rows]
  n = x.shape[0]
  start, stop, _ = rows.indices(n)
  out = np.empty((stop - start,) + x.shape[1:], x.dtype)
  filled = np.zeros(stop - start, bool)
  for shard in x.addressable_shards:
    a, b, _ = shard.index[0].indices(n) if shard.index else (0, n, 1)
    lo, hi = max(a, start), min(b, stop)
    if lo < hi:
      out[lo - start:hi - start] = np.asarray(shard.data)[lo - a:hi - a]
      filled[lo - start:hi - start] = True
  if not filled.all():
    raise ValueError(f"rows {start}:{stop} are not all on process {jax.process_index()}'s devices")
  return out


def allgather(tree):
  """Concatenates each process's numpy rows (leading axis, process order) on every process."""
  if jax.process_count() == 1:
    return tree
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def allgather_objects(items: list) -> list:
  """Concatenates each process's list of JSON-able items (e.g. decoded texts) on every process."""
  if jax.process_count() == 1:
    return list(items)
  import json  # pylint: disable=g-import-not-at-top
  raw = np.frombuffer(json.dumps(items).encode(), np.uint8)
  sizes = allgather(np.array([raw.size], np.int64))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:raw.size] = raw
  blocks = allgather(padded[None])
  return [x for blob, size in zip(blocks, sizes) for x in json.loads(blob[:size].tobytes().decode())]


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process (every process gets the same answer: an agreed decision)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(allgather(np.array([flag], np.int32)).any())


def mesh_of(tree) -> Mesh:
  """The mesh the (NamedSharding-placed) arrays of `tree` live on."""
  return jax.tree.leaves(tree)[0].sharding.mesh


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
  """How this process joins a multi-process run (all None: decide from the environment)."""

  coordinator_address: str | None = None  # host:port of process 0
  num_processes: int | None = None
  process_id: int | None = None


def distributed_args(spec: DistributedSpec = DistributedSpec(), env=None) -> dict | None:
  """The keyword arguments for jax.distributed.initialize, or None for a single-process run.

  Explicit flags win; then JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (all three); then
  platforms JAX detects itself (TPU VM pods, SLURM, Open MPI) when RLDYN_DISTRIBUTED=1 or their own
  variables are present, which is what tpu/ launches set.
  """
  env = os.environ if env is None else env
  given = (spec.coordinator_address, spec.num_processes, spec.process_id)
  if any(v is not None for v in given):
    if any(v is None for v in given):
      raise ValueError("--coordinator_address, --num_processes and --process_id go together; got "
                       f"{spec.coordinator_address!r}, {spec.num_processes!r}, {spec.process_id!r}")
    if not 0 <= spec.process_id < spec.num_processes:
      raise ValueError(f"--process_id={spec.process_id} must be in [0, --num_processes={spec.num_processes})")
    return {"coordinator_address": spec.coordinator_address, "num_processes": spec.num_processes,
            "process_id": spec.process_id}
  names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  if env.get(names[0]):
    missing = [n for n in names if not env.get(n)]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {missing} are not; set all three")
    return {"coordinator_address": env[names[0]], "num_processes": int(env[names[1]]),
            "process_id": int(env[names[2]])}
  if env.get("RLDYN_DISTRIBUTED") == "0":
    return None
  many = lambda name: int(env.get(name) or 1) > 1  # noqa: E731
  if (env.get("RLDYN_DISTRIBUTED") == "1" or env.get("TPU_WORKER_HOSTNAMES") or many("SLURM_NTASKS")
      or many("OMPI_COMM_WORLD_SIZE")):
    return {}  # jax.distributed.initialize() detects the cluster itself
  return None


def init_distributed(spec: DistributedSpec = DistributedSpec()) -> None:
  """Multi-host (TPU pod / multi-node GPU) initialisation; a no-op on a single process (see
  distributed_args for where the settings come from). Safe to call twice."""
  args = distributed_args(spec)
  if args is None or jax.distributed.is_initialized():
    return
  if not jax.config.jax_cpu_collectives_implementation:  # CPU processes talk over gloo (TPU/GPU: unused)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # JAX's preemption service would take SIGTERM over from rldyn's handler (runtime.install_stop_handler);
  # rldyn agrees on the stop step itself (parallel.any_process at every step boundary).
  jax.config.update("jax_enable_preemption_service", False)
  jax.distributed.initialize(**args)
