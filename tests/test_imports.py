"""The package's import graph: no cycles, the RL loop independent of pretraining, numpy-only libraries."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _graph() -> dict[str, set[str]]:
  """module -> rldyn modules it imports (top-level and function-level imports alike)."""
  mods = {}
  for d, _, files in os.walk(os.path.join(ROOT, "rldyn")):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
        mods[rel[:-9] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
  graph = {}
  for m, path in mods.items():
    deps = set()
    for n in ast.walk(ast.parse(open(path).read())):
      if isinstance(n, ast.Import):
        deps |= {a.name for a in n.names}
      elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
        deps |= {f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in mods else n.module for a in n.names}
    graph[m] = {d for d in deps if d in mods and d != m}
  return graph


def _reaches(graph, a, b) -> bool:
  seen, todo = set(), [a]
  while todo:
    v = todo.pop()
    if v == b:
      return True
    if v not in seen:
      seen.add(v)
      todo += graph[v]
  return False


def test_no_import_cycles_between_modules():
  graph = _graph()
  # A package importing its own submodules (lazily re-exporting them) is not a cycle between concerns.
  cyclic = [(a, b) for a in graph for b in graph[a]
            if not b.startswith(a + ".") and _reaches(graph, b, a) and not a.startswith(b + ".")]
  assert not cyclic, cyclic


def test_the_rl_loop_does_not_import_pretraining():
  graph = _graph()
  assert not _reaches(graph, "rldyn.rl.loop", "rldyn.pretrain")
  assert _reaches(graph, "rldyn.launch", "rldyn.pretrain")  # the launcher decides


def test_numpy_only_libraries_do_not_import_jax():
  code = ("import sys; import rldyn.phases, rldyn.phases.__main__, rldyn.roles, rldyn.workdir, "
          "rldyn.metrics.passk, rldyn.metrics.writers; print('jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert out.stdout.strip() == "False", out.stderr[-2000:]
