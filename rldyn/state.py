"""Sharded construction of parameters and optimizer state: eval_shape -> shardings -> jit."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from rldyn import model as model_lib
from rldyn import parallel
from rldyn.optim import make_optimizer


def param_shardings(cfg: model_lib.ModelConfig, mesh: Mesh):
  return parallel.tree_shardings(mesh, model_lib.abstract_params(cfg), model_lib.logical_axes(cfg))


def init_params(cfg: model_lib.ModelConfig, mesh: Mesh, key: jax.Array):
  """Parameters created directly in their shards (never materialised whole on one device)."""
  return jax.jit(functools.partial(model_lib.init_params, cfg),
                 out_shardings=param_shardings(cfg, mesh))(key)


def opt_shardings(tx: optax.GradientTransformation, abstract_params, shardings, mesh: Mesh):
  """Optimizer-state shardings: moments follow their parameter, counters are replicated."""
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  return optax.tree_map_params(tx, lambda _, s: s, abstract_opt, shardings,
                               transform_non_params=lambda _: parallel.replicated(mesh))


def init_opt_state(tx: optax.GradientTransformation, params, mesh: Mesh):
  shardings = jax.tree.map(lambda x: x.sharding, params)
  out = opt_shardings(tx, jax.eval_shape(lambda: params), shardings, mesh)
  return jax.jit(tx.init, out_shardings=out)(params)


def tree_norm(tree) -> jax.Array:
  """Global L2 norm of a pytree, accumulated in float32."""
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def abstract_rl_tree(model_cfg: model_lib.ModelConfig, optim_cfg, total_steps: int, mesh: Mesh):
  """Sharded ShapeDtypeStructs of an RL checkpoint tree: {state: {params, opt_state}, ref_params}."""
  shardings = param_shardings(model_cfg, mesh)
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        model_lib.abstract_params(model_cfg), shardings)
  tx = make_optimizer(optim_cfg, total_steps)
  opt = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     jax.eval_shape(tx.init, params), opt_shardings(tx, params, shardings, mesh))
  return {"state": {"params": params, "opt_state": opt}, "ref_params": params}
