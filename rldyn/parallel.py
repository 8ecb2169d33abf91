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
  """Places a host batch (numpy arrays, leading dim = batch) on the mesh."""
  return {k: jax.device_put(np.asarray(v), batch_sharding(mesh, np.ndim(v))) for k, v in batch.items()}


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
  jax.distributed.initialize(**args)
