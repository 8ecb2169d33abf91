"""The pure RL update: `update_step(state, ref_params, batch) -> (state, metrics)`.

One call consumes one rollout batch of B = prompts × group responses. The batch is split into
U = `rl.updates_per_batch` minibatches (row b goes to minibatch b mod U), and a `lax.scan` takes one
optimizer step per minibatch, so from the second minibatch on π_θ ≠ π_old and the clip is active, as in
the papers. Everything is one jitted function with explicit shardings (`make_update_step`).

Batch (S = prompt width P + N response positions; response tensors are N wide):
  tokens_BS, mask_BS       prompt (left-padded) + response (right-padded) and which slots are real
  resp_mask_BN             1.0 on response tokens
  old_logp_BN              log π_old of the sampled tokens, as the sampler reported it
  ref_logp_BN              log π_ref of the sampled tokens (`response_logprobs` with the reference params)
  adv_BN                   per-token advantages (group-normalised, role transforms applied)
  entropy_BN               the sampler's full-vocabulary entropy of π_old at each token
  roles_BN                 0 other, 1 planning, 2 execution

With loss.kl_coef > 0, each minibatch first checks whether θ equals θ_ref bit for bit; if so the KL term
uses the policy's own log-probs as the reference (exactly zero KL and, for k2/k3, zero gradient) instead of
the reference scorer's, which differ from them by compilation noise (docs/objectives.md).

Metrics: the per-token ones come from the sampler's arrays (π_old at rollout) and from the logits the
update computes anyway; no extra forward pass. `sampler/logp_diff_*` compares the sampler's log-probs with
the update's recomputation on minibatch 0, where θ = θ_old exactly, over its response tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rldyn import model as model_lib
from rldyn import parallel
from rldyn import state as state_lib
from rldyn.config import LossConfig
from rldyn.metrics import token_stats
from rldyn.rl import losses


def response_logits(model_cfg, params, tokens_BS, mask_BS, n: int):
  """Float32 logits predicting the N response tokens (positions P-1 .. S-2)."""
  logits, _ = model_lib.apply(model_cfg, params, tokens_BS, model_lib.positions_from_mask(mask_BS),
                              model_lib.causal_mask(mask_BS))
  return logits[:, -n - 1:-1]


def token_logp_entropy(logits_BNV, tokens_BN, temperature: float):
  logp_all = jax.nn.log_softmax(logits_BNV / temperature, axis=-1)
  logp = jnp.take_along_axis(logp_all, tokens_BN[..., None], axis=-1)[..., 0]
  ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, ent


def response_logp_entropy(model_cfg, temperature: float, params, tokens_BS, mask_BS, n: int):
  """Teacher-forced (log π(token), full-vocabulary entropy) of the N response tokens (float32 [B, N] each)."""
  logits = response_logits(model_cfg, params, tokens_BS, mask_BS, n)
  return token_logp_entropy(logits, tokens_BS[:, -n:], temperature)


def response_logprobs(model_cfg, temperature: float, params, tokens_BS, mask_BS, n: int):
  """Teacher-forced log π(token) of the N response tokens of each row (float32 [B, N])."""
  return response_logp_entropy(model_cfg, temperature, params, tokens_BS, mask_BS, n)[0]


def rollout_metrics(batch) -> dict:
  """Role-split statistics of the rollout itself (π_old): entropy, NLL, advantage mass, role fractions."""
  m, roles = batch["resp_mask_BN"], batch["roles_BN"]
  return {**token_stats.role_means("entropy", batch["entropy_BN"], m, roles, jnp),
          **token_stats.role_means("nll", -batch["old_logp_BN"], m, roles, jnp),
          **token_stats.role_mass("adv_mass", batch["adv_BN"], m, roles, jnp),
          **token_stats.role_fractions(m, roles, jnp)}


def policy_loss(model_cfg, lcfg: LossConfig, temperature: float, max_len: int, params, mb,
                role_metrics: bool = True):
  """The minibatch objective and its per-token statistics (sums, so minibatches combine exactly)."""
  n = mb["resp_mask_BN"].shape[1]
  logits = response_logits(model_cfg, params, mb["tokens_BS"], mb["mask_BS"], n)
  logp, ent = token_logp_entropy(logits, mb["tokens_BS"][:, -n:], temperature)
  m = mb["resp_mask_BN"]
  # Python-level branches on static config: the default study's graph is exactly what it was.
  cov = {"mask_BT": m, **losses.cov_options(lcfg)} if lcfg.name in losses.COV_LOSSES else {}
  pg, clipped = losses.POLICY_LOSSES.get(lcfg.name)(
      logp, mb["old_logp_BN"], mb["adv_BN"], lcfg.eps_low, lcfg.eps_high, lcfg.dual_clip or None, **cov)
  agg = functools.partial(losses.AGGREGATIONS.get(lcfg.aggregation), mask_BT=m, max_len=max_len)
  ref = mb["ref_logp_BN"]
  if lcfg.kl_coef > 0:
    # π_ref is scored by a separately compiled forward, so at θ = θ_ref its log-probs differ from the
    # update's by float noise, whose KL gradient Adam would blow up to lr-sized steps. When the parameters
    # equal the reference bit for bit, the reference log-probs ARE the policy's: use them (without gradient),
    # so d = 0 exactly and the k2/k3 gradient is exactly zero (k1's per-token gradient is ∇log π at any d).
    ref = jnp.where(mb["at_ref"], jax.lax.stop_gradient(logp), ref)
  kl = losses.KL_ESTIMATORS.get(lcfg.kl_estimator)(logp, ref)
  loss_pg = agg(pg)
  loss = loss_pg + lcfg.kl_coef * agg(kl) - lcfg.entropy_coef * agg(ent)
  sums = {
      "tokens": m.sum(),
      "clip": (clipped * m).sum(),
      "k1": (losses.k1(logp, ref) * m).sum(),
      "k3": (losses.k3(logp, ref) * m).sum(),
      "logp_diff_sum": (jnp.abs(logp - mb["old_logp_BN"]) * m).sum(),
      "logp_diff_max": jnp.max(jnp.abs(logp - mb["old_logp_BN"]) * m),
  }
  for name, w in (token_stats.role_weights(m, mb["roles_BN"]).items() if role_metrics else ()):
    sums[f"tokens_{name}"] = w.sum()
    sums[f"clip_{name}"] = (clipped * w).sum()
  return loss, {"loss/pg": loss_pg, "loss/total": loss, **sums}


def params_equal(a, b) -> jax.Array:
  """Whether two parameter trees are equal bit for bit (a bool scalar)."""
  return jnp.all(jnp.stack([jnp.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]))


def update_step(model_cfg, lcfg: LossConfig, tx: optax.GradientTransformation, temperature: float,
                updates: int, max_len: int, state, ref_params, batch, role_metrics: bool = True):
  """(state = {params, opt_state}, ref_params, batch) -> (state, metrics). Pure; jit it.

  role_metrics=False drops the role-split statistics (only to measure what they cost).
  """
  grad_fn = jax.value_and_grad(functools.partial(
      policy_loss, model_cfg, lcfg, temperature, max_len, role_metrics=role_metrics), has_aux=True)

  def split(x):  # row b -> minibatch b mod U
    return jnp.swapaxes(x.reshape(x.shape[0] // updates, updates, *x.shape[1:]), 0, 1)

  minibatches = jax.tree.map(split, batch)

  def one_update(carry, mb):
    params, opt_state = carry
    if lcfg.kl_coef > 0:
      mb = {**mb, "at_ref": params_equal(params, ref_params)}
    (_, stats), grads = grad_fn(params, mb)
    grad_norm = state_lib.tree_norm(grads)
    finite = jnp.isfinite(stats["loss/total"]) & jnp.isfinite(grad_norm)
    new_updates, new_opt = tx.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, new_updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    stats = {**stats, "grad_norm": grad_norm, "nonfinite": (~finite).astype(jnp.float32)}
    return (keep(new_params, params), keep(new_opt, opt_state)), stats

  params0 = state["params"]
  (params, opt_state), stats = jax.lax.scan(one_update, (params0, state["opt_state"]), minibatches)
  tokens = stats["tokens"].sum()
  metrics = {
      "loss/pg": stats["loss/pg"].mean(),
      "loss/total": stats["loss/total"].mean(),
      "grad_norm": stats["grad_norm"].mean(),
      "clip_frac": stats["clip"].sum() / jnp.maximum(tokens, 1.0),
      "kl/k1": stats["k1"].sum() / jnp.maximum(tokens, 1.0),
      "kl/k3": stats["k3"].sum() / jnp.maximum(tokens, 1.0),
      "sampler/logp_diff_max": stats["logp_diff_max"][0],
      "sampler/logp_diff_mean": stats["logp_diff_sum"][0] / jnp.maximum(stats["tokens"][0], 1.0),
      "update_norm": state_lib.tree_norm(jax.tree.map(jnp.subtract, params, params0)),
      "param_norm": state_lib.tree_norm(params),
      "fault/nonfinite_updates": stats["nonfinite"].sum(),
  }
  if not role_metrics:
    return {"params": params, "opt_state": opt_state}, metrics
  metrics.update(rollout_metrics(batch))
  for name in token_stats.ROLE_IDS:
    metrics[f"clip_frac/{name}"] = stats[f"clip_{name}"].sum() / jnp.maximum(
        stats[f"tokens_{name}"].sum(), 1.0)
  return {"params": params, "opt_state": opt_state}, metrics


BATCH_KEYS = ("tokens_BS", "mask_BS", "resp_mask_BN", "old_logp_BN", "ref_logp_BN", "adv_BN",
              "entropy_BN", "roles_BN")


def make_update_step(model_cfg, lcfg, tx, temperature: float, updates: int, max_len: int, mesh, state,
                     role_metrics: bool = True):
  """jit(update_step) with explicit shardings; donates the state it replaces, never the reference."""
  st_sh = jax.tree.map(lambda x: x.sharding, state)
  b_sh = {k: parallel.batch_sharding(mesh, 2) for k in BATCH_KEYS}
  fn = functools.partial(update_step, model_cfg, lcfg, tx, temperature, updates, max_len,
                         role_metrics=role_metrics)
  return jax.jit(fn, in_shardings=(st_sh, st_sh["params"], b_sh),
                 out_shardings=(st_sh, parallel.replicated(mesh)), donate_argnums=(0,))


def make_ref_logprobs(model_cfg, temperature: float, n: int, mesh, params):
  """jit(response_logprobs) for N response positions: (ref_params, tokens_BS, mask_BS) -> ref_logp_BN."""
  p_sh = jax.tree.map(lambda x: x.sharding, params)
  b = parallel.batch_sharding(mesh, 2)
  fn = lambda p, t, m: response_logprobs(model_cfg, temperature, p, t, m, n)  # noqa: E731
  return jax.jit(fn, in_shardings=(p_sh, b, b), out_shardings=b)
