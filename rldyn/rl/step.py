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

Log-probs and entropies (`response_logp_entropy`) never hold [B, S, V] logits: the forward pass stops at
the final-normed hidden states, only the N response positions are projected, C = `loss.logit_chunk`
positions at a time (`chunked_logp_entropy`: a `lax.map` over chunks whose body is rematerialised, so
the forward and the backward hold one [B, C, V] float32 block), and the projection is float32 whatever
the compute dtype, so entropies are float32-exact under bfloat16 compute.

Each minibatch can be split further into `rl.micro_batches` micro-batches whose gradients are summed
before the one optimizer step (weights by the aggregation's denominator: the same update as one
micro-batch, up to float rounding), so activation memory scales with the micro-batch.

With loss.objective = "verifree" (Zhou et al. 2025; rldyn.rl.verifree) the rows are VeriFree's patched
rows prompt + z + y* + end, and the loss is `verifree_loss`: `verifree.surrogate` over one forward of them
(z's log-probs and the reference answer's), with the extra batch keys
  answer_mask_BN           1.0 on the appended reference answer and end token (resp_mask_BN covers z)
  reason_w_B, answer_w_B   the RLOO advantage A_i and the reward R_i of each row (constants)
and the extra metrics `loss/answer` (the answer term; `loss/pg` is the reasoning term) and
`verifree/answer_nll` (mean −log π_θ(y*|q,z) over rows with a marker, at θ_old).

Metrics: the per-token ones come from the sampler's arrays (π_old at rollout) and from the logits the
update computes anyway; no extra forward pass. `kl/k1`, `kl/k3` and their role splits
(`kl/k1/planning`, ...) need `ref_logp_BN`; when `needs_reference(lcfg)` is False (loss.kl_coef = 0
and loss.kl_metrics off) the batch has no `ref_logp_BN`, the caller skips the reference forward and no
`kl/*` metric is logged. `sampler/logp_diff_*` compares the sampler's log-probs with
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
from rldyn.rl import verifree


# Auto chunk (loss.logit_chunk = 0): at most this many float32 logits (B x C x V, whole batch) per chunk.
AUTO_CHUNK_LOGITS = 2**27


def auto_chunk(b: int, n: int, v: int, chunk: int = 0) -> int:
  """Response positions per chunk: `chunk` if > 0 (capped at n), else the largest C <= n with
  b·C·v <= AUTO_CHUNK_LOGITS (at least 1); C = n means one chunk (no loop)."""
  if chunk > 0:
    return min(chunk, n)
  return max(1, min(n, AUTO_CHUNK_LOGITS // max(b * v, 1)))


def response_hidden(model_cfg, params, tokens_BS, mask_BS, n: int):
  """Final-normed float32 hidden states predicting the N response tokens (positions P-1 .. S-2): [B, N, E]."""
  x, _ = model_lib.apply_hidden(model_cfg, params, tokens_BS, model_lib.positions_from_mask(mask_BS),
                                model_lib.causal_mask(mask_BS))
  return x[:, -n - 1:-1]


def response_logits(model_cfg, params, tokens_BS, mask_BS, n: int):
  """Float32 logits predicting the N response tokens ([B, N, V]: materialised whole; tests and probes)."""
  return model_lib.head_logits(model_cfg, params, response_hidden(model_cfg, params, tokens_BS, mask_BS, n))


def token_logp_entropy(logits_BNV, tokens_BN, temperature: float):
  """(log π(token), full-vocabulary entropy) from logits, π = softmax(logits / temperature); float32."""
  logp_all = jax.nn.log_softmax(logits_BNV.astype(jnp.float32) / temperature, axis=-1)
  logp = jnp.take_along_axis(logp_all, tokens_BN[..., None], axis=-1)[..., 0]
  ent = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
  return logp, ent


def chunked_logp_entropy(model_cfg, params, x_BNE, tokens_BN, temperature: float, chunk: int = 0):
  """`token_logp_entropy` of `head_logits(x_BNE)`, C response positions at a time (C = auto_chunk).

  The positions are padded to a multiple of C and mapped over with `lax.map`; the chunk body is under
  `jax.checkpoint`, so the backward pass recomputes each chunk's [B, C, V] logits instead of keeping
  them: memory scales with C, not N. One chunk (C >= N) is a plain call.
  """
  b, n, _ = x_BNE.shape
  c = auto_chunk(b, n, model_cfg.vocab_size, chunk)

  def one(x_BCE, tokens_BC):
    return token_logp_entropy(model_lib.head_logits(model_cfg, params, x_BCE), tokens_BC, temperature)

  if c >= n:
    return one(x_BNE, tokens_BN)
  k = -(-n // c)
  pad = k * c - n
  xs = jnp.pad(x_BNE, ((0, 0), (0, pad), (0, 0))).reshape(b, k, c, -1).swapaxes(0, 1)
  ts = jnp.pad(tokens_BN, ((0, 0), (0, pad))).reshape(b, k, c).swapaxes(0, 1)
  logp, ent = jax.lax.map(jax.checkpoint(lambda a: one(*a)), (xs, ts))
  unchunk = lambda y: y.swapaxes(0, 1).reshape(b, k * c)[:, :n]  # noqa: E731
  return unchunk(logp), unchunk(ent)


def response_logp_entropy(model_cfg, temperature: float, params, tokens_BS, mask_BS, n: int, chunk: int = 0):
  """Teacher-forced (log π(token), full-vocabulary entropy) of the N response tokens (float32 [B, N] each).

  chunk: response positions projected at a time (loss.logit_chunk; 0 = auto, see `auto_chunk`).
  """
  x = response_hidden(model_cfg, params, tokens_BS, mask_BS, n)
  return chunked_logp_entropy(model_cfg, params, x, tokens_BS[:, -n:], temperature, chunk)


def response_logprobs(model_cfg, temperature: float, params, tokens_BS, mask_BS, n: int, chunk: int = 0):
  """Teacher-forced log π(token) of the N response tokens of each row (float32 [B, N])."""
  return response_logp_entropy(model_cfg, temperature, params, tokens_BS, mask_BS, n, chunk)[0]


def needs_reference(lcfg: LossConfig) -> bool:
  """Whether the update needs π_ref's log-probs: for the KL loss term, or for the kl/* metrics."""
  return lcfg.kl_coef > 0 or lcfg.kl_metrics


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
  logp, ent = response_logp_entropy(model_cfg, temperature, params, mb["tokens_BS"], mb["mask_BS"], n,
                                    lcfg.logit_chunk)
  m = mb["resp_mask_BN"]
  # Python-level branches on static config: the default study's graph is exactly what it was.
  cov = {"mask_BT": m, **losses.cov_options(lcfg)} if lcfg.name in losses.COV_LOSSES else {}
  pg, clipped = losses.POLICY_LOSSES.get(lcfg.name)(
      logp, mb["old_logp_BN"], mb["adv_BN"], lcfg.eps_low, lcfg.eps_high, lcfg.dual_clip or None, **cov)
  agg = functools.partial(losses.AGGREGATIONS.get(lcfg.aggregation), mask_BT=m, max_len=max_len)
  ref = mb["ref_logp_BN"] if needs_reference(lcfg) else None
  if lcfg.kl_coef > 0:
    # π_ref is scored by a separately compiled forward, so at θ = θ_ref its log-probs differ from the
    # update's by float noise, whose KL gradient Adam would blow up to lr-sized steps. When the parameters
    # equal the reference bit for bit, the reference log-probs ARE the policy's: use them (without gradient),
    # so d = 0 exactly and the k2/k3 gradient is exactly zero (k1's per-token gradient is ∇log π at any d).
    ref = jnp.where(mb["at_ref"], jax.lax.stop_gradient(logp), ref)
  loss_pg = agg(pg)
  kl_term = lcfg.kl_coef * agg(losses.KL_ESTIMATORS.get(lcfg.kl_estimator)(logp, ref)) if lcfg.kl_coef > 0 \
      else 0.0
  loss = loss_pg + kl_term - lcfg.entropy_coef * agg(ent)
  sums = _token_sums(logp, m, clipped, ref, mb, role_metrics)
  return loss, {"loss/pg": loss_pg, "loss/total": loss, **sums}


def _token_sums(logp, m, clipped, ref, mb, role_metrics: bool) -> dict:
  """The per-minibatch sums both objectives report: tokens, clipped tokens, |log π − log π_old| (sum and
  max), the KL estimators k1/k3 against `ref` (None: not logged), all and (role_metrics) per role."""
  sums = {
      "tokens": m.sum(),
      "clip": (clipped * m).sum(),
      "logp_diff_sum": (jnp.abs(logp - mb["old_logp_BN"]) * m).sum(),
      "logp_diff_max": jnp.max(jnp.abs(logp - mb["old_logp_BN"]) * m),
  }
  if ref is not None:  # KL sums, all tokens and (role_metrics) per role: kl/k1, kl/k1/planning, ...
    k1, k3 = losses.k1(logp, ref), losses.k3(logp, ref)
    sums["k1"], sums["k3"] = (k1 * m).sum(), (k3 * m).sum()
    if role_metrics:
      sums.update(token_stats.role_sums("k1", k1, m, mb["roles_BN"]))
      sums.update(token_stats.role_sums("k3", k3, m, mb["roles_BN"]))
  for name, w in (token_stats.role_weights(m, mb["roles_BN"]).items() if role_metrics else ()):
    sums[f"tokens_{name}"] = w.sum()
    sums[f"clip_{name}"] = (clipped * w).sum()
  return sums


def verifree_loss(model_cfg, lcfg: LossConfig, temperature: float, max_len: int, params, mb,
                  role_metrics: bool = True):
  """VeriFree's minibatch objective (`verifree.surrogate`) and the statistics `policy_loss` returns.

  One forward over the patched rows gives log π_θ of the reasoning z (resp_mask_BN) and of the appended
  reference answer (answer_mask_BN). No ratio and no clip (one on-policy update: `clip` is 0).
  """
  n = mb["resp_mask_BN"].shape[1]
  logp, _ = response_logp_entropy(model_cfg, temperature, params, mb["tokens_BS"], mb["mask_BS"], n,
                                  lcfg.logit_chunk)
  m, am = mb["resp_mask_BN"], mb["answer_mask_BN"]
  zero_w = jnp.zeros_like(mb["answer_w_B"])
  loss_reason = verifree.surrogate(logp, m, logp, am, mb["reason_w_B"], zero_w, max_len)
  loss = verifree.surrogate(logp, m, logp, am, mb["reason_w_B"], mb["answer_w_B"], max_len)
  answer_rows = (am.sum(axis=1) > 0).astype(jnp.float32)
  ref = mb["ref_logp_BN"] if needs_reference(lcfg) else None  # kl/* metrics over z (no KL loss term here)
  sums = _token_sums(logp, m, jnp.zeros_like(m), ref, mb, role_metrics)  # no clip: clipped nowhere
  sums["answer_nll"] = -(jax.lax.stop_gradient(logp) * am).sum()
  sums["answer_rows"] = answer_rows.sum()
  return loss, {"loss/pg": loss_reason, "loss/answer": loss - loss_reason, "loss/total": loss, **sums}


def aggregation_weight(aggregation: str, mask_BN) -> jax.Array:
  """The denominator a loss aggregation divides by over these rows (micro-batch weighting).

  Each aggregation is Σ(per-row terms) / D with D = Σ m (token-mean), the number of rows with a
  response token (seq-mean-token-mean) or the number of rows (seq-mean-token-sum-norm; its L_max is a
  constant), so a minibatch's value is Σ_j (D_j / D) · value_j over its micro-batches j.
  """
  if aggregation == "token-mean":
    return mask_BN.sum()
  if aggregation == "seq-mean-token-mean":
    return (mask_BN.sum(axis=1) > 0).sum().astype(jnp.float32)
  if aggregation == "seq-mean-token-sum-norm":
    return jnp.float32(mask_BN.shape[0])
  raise ValueError(f"rl.micro_batches > 1 cannot split loss.aggregation={aggregation!r}; valid: "
                   "seq-mean-token-mean, seq-mean-token-sum-norm, token-mean")


def check_micro_batches(lcfg: LossConfig, micro: int) -> None:
  """Refuses micro-batching of losses whose value is not a sum over rows (a clear one-line error)."""
  if micro > 1 and lcfg.name in losses.COV_LOSSES:
    raise ValueError(f"rl.micro_batches={micro} cannot split loss.name={lcfg.name!r} (its covariance "
                     "and top-k selection span the whole minibatch); use rl.micro_batches=1 or another loss")
  if micro > 1:
    aggregation_weight(lcfg.aggregation, jnp.zeros((1, 1)))


def params_equal(a, b) -> jax.Array:
  """Whether two parameter trees are equal bit for bit (a bool scalar)."""
  return jnp.all(jnp.stack([jnp.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]))


def _accumulated_grad(grad_fn, lcfg: LossConfig, micro: int, params, mb):
  """value_and_grad of the minibatch loss as `micro` micro-batches (row b -> micro-batch b mod M).

  Loss, gradient and loss/* metrics are weighted by D_j / D (`aggregation_weight`); the other
  statistics are sums (logp_diff_max a max). A `lax.scan` carries the gradient sum, so only one
  micro-batch's activations are live.
  """
  if micro == 1:
    return grad_fn(params, mb)
  total = jnp.maximum(aggregation_weight(lcfg.aggregation, mb["resp_mask_BN"]), 1e-30)
  split = lambda x: jnp.swapaxes(x.reshape(x.shape[0] // micro, micro, *x.shape[1:]), 0, 1)  # noqa: E731
  micro_mbs = jax.tree.map(lambda x: split(x) if jnp.ndim(x) else jnp.broadcast_to(x, (micro,)), mb)

  def one(acc, part):
    w = aggregation_weight(lcfg.aggregation, part["resp_mask_BN"]) / total
    (_, stats), grads = grad_fn(params, part)
    grads = jax.tree.map(lambda a, g: a + w * g.astype(a.dtype), acc, grads)
    stats = {k: (w * v if k.startswith("loss/") else v) for k, v in stats.items()}
    return grads, stats

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  grads, stats = jax.lax.scan(one, zeros, micro_mbs)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
  stats = {k: (v.max() if k == "logp_diff_max" else v.sum()) for k, v in stats.items()}
  return (stats["loss/total"], stats), grads


def update_step(model_cfg, lcfg: LossConfig, tx: optax.GradientTransformation, temperature: float,
                updates: int, max_len: int, state, ref_params, batch, role_metrics: bool = True,
                micro_batches: int = 1):
  """(state = {params, opt_state}, ref_params, batch) -> (state, metrics). Pure; jit it.

  role_metrics=False drops the role-split statistics (only to measure what they cost). micro_batches:
  rl.micro_batches (gradient accumulation inside each minibatch).
  """
  check_micro_batches(lcfg, micro_batches)
  loss_fn = verifree_loss if lcfg.objective == "verifree" else policy_loss
  grad_fn = jax.value_and_grad(functools.partial(
      loss_fn, model_cfg, lcfg, temperature, max_len, role_metrics=role_metrics), has_aux=True)

  def split(x):  # row b -> minibatch b mod U
    return jnp.swapaxes(x.reshape(x.shape[0] // updates, updates, *x.shape[1:]), 0, 1)

  minibatches = jax.tree.map(split, batch)

  def one_update(carry, mb):
    params, opt_state = carry
    if lcfg.kl_coef > 0:
      mb = {**mb, "at_ref": params_equal(params, ref_params)}
    (_, stats), grads = _accumulated_grad(grad_fn, lcfg, micro_batches, params, mb)
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
      "sampler/logp_diff_max": stats["logp_diff_max"][0],
      "sampler/logp_diff_mean": stats["logp_diff_sum"][0] / jnp.maximum(stats["tokens"][0], 1.0),
      "update_norm": state_lib.tree_norm(jax.tree.map(jnp.subtract, params, params0)),
      "param_norm": state_lib.tree_norm(params),
      "fault/nonfinite_updates": stats["nonfinite"].sum(),
  }
  if "loss/answer" in stats:  # VeriFree
    metrics["loss/answer"] = stats["loss/answer"].mean()
    metrics["verifree/answer_nll"] = stats["answer_nll"].sum() / jnp.maximum(stats["answer_rows"].sum(), 1.0)
  if "k1" in stats:
    metrics["kl/k1"] = stats["k1"].sum() / jnp.maximum(tokens, 1.0)
    metrics["kl/k3"] = stats["k3"].sum() / jnp.maximum(tokens, 1.0)
  if not role_metrics:
    return {"params": params, "opt_state": opt_state}, metrics
  metrics.update(rollout_metrics(batch))
  for name in token_stats.ROLE_IDS:
    role_tokens = jnp.maximum(stats[f"tokens_{name}"].sum(), 1.0)
    metrics[f"clip_frac/{name}"] = stats[f"clip_{name}"].sum() / role_tokens
    for k in ("k1", "k3") if "k1" in stats else ():
      metrics[f"kl/{k}/{name}"] = stats[f"{k}_{name}"].sum() / role_tokens
  return {"params": params, "opt_state": opt_state}, metrics


BATCH_KEYS = ("tokens_BS", "mask_BS", "resp_mask_BN", "old_logp_BN", "ref_logp_BN", "adv_BN",
              "entropy_BN", "roles_BN")


VERIFREE_KEYS = ("answer_mask_BN", "reason_w_B", "answer_w_B")  # loss.objective = verifree adds these


def batch_keys(lcfg: LossConfig) -> tuple[str, ...]:
  """The update batch's keys: BATCH_KEYS, without ref_logp_BN when `needs_reference` is False, plus
  VERIFREE_KEYS under loss.objective = verifree."""
  keys = BATCH_KEYS if needs_reference(lcfg) else tuple(k for k in BATCH_KEYS if k != "ref_logp_BN")
  return keys + VERIFREE_KEYS if lcfg.objective == "verifree" else keys


def make_update_step(model_cfg, lcfg, tx, temperature: float, updates: int, max_len: int, mesh, state,
                     role_metrics: bool = True, micro_batches: int = 1):
  """jit(update_step) with explicit shardings; donates the state it replaces, never the reference.

  The batch must have exactly `batch_keys(lcfg)`.
  """
  st_sh = jax.tree.map(lambda x: x.sharding, state)
  b_sh = {k: parallel.batch_sharding(mesh, 1 if k.endswith("_B") else 2) for k in batch_keys(lcfg)}
  fn = functools.partial(update_step, model_cfg, lcfg, tx, temperature, updates, max_len,
                         role_metrics=role_metrics, micro_batches=micro_batches)
  return jax.jit(fn, in_shardings=(st_sh, st_sh["params"], b_sh),
                 out_shardings=(st_sh, parallel.replicated(mesh)), donate_argnums=(0,))


def make_ref_logprobs(model_cfg, temperature: float, n: int, mesh, params, chunk: int = 0):
  """jit(response_logprobs) for N response positions: (ref_params, tokens_BS, mask_BS) -> ref_logp_BN.

  chunk: loss.logit_chunk. Only needed when `needs_reference(loss config)`.
  """
  p_sh = jax.tree.map(lambda x: x.sharding, params)
  b = parallel.batch_sharding(mesh, 2)
  fn = lambda p, t, m: response_logprobs(model_cfg, temperature, p, t, m, n, chunk)  # noqa: E731
  return jax.jit(fn, in_shardings=(p_sh, b, b), out_shardings=b)
