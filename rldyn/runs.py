"""Deprecated: use rldyn.workdir.Workdir (kept only until every caller has moved)."""

from __future__ import annotations

from rldyn.workdir import Workdir


def load_run(workdir: str):
  return Workdir(workdir).load_config()


def base_params(workdir: str, cfg, mesh) -> dict:
  return Workdir(workdir).base_params(cfg.model, mesh)


def checkpoint_steps(workdir: str) -> list[int]:
  return Workdir(workdir).checkpoint_steps()


def checkpoint_params(workdir: str, step: int, cfg, mesh) -> dict:
  return Workdir(workdir).checkpoint_params(step, cfg, mesh)
