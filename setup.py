"""rldyn: training-dynamics studies of RL post-training, in JAX/Flax."""
import setuptools

setuptools.setup(
    name="rldyn",
    version="0.1.0",
    description="What does RL post-training teach reasoning models? Measure it.",
    # The studies in experiments/ install as rldyn.experiments, so `rldyn-train --config=two_phase` works
    # outside a checkout too.
    packages=setuptools.find_packages(include=["rldyn", "rldyn.*"]) + ["rldyn.experiments"],
    package_dir={"rldyn.experiments": "experiments"},
    package_data={"rldyn": ["data/*.json", "data/demo_base/*"], "rldyn.experiments": ["README.md"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.11",
        "optax",
        "orbax-checkpoint",
        "numpy",
        "ml-collections",
        "absl-py",
        "chex",
        "tensorflow-datasets",
        "array_record",
        "importlib_resources",  # tfds 4.9.10 imports it without declaring it
        "grain",
    ],
    extras_require={
        "hf": ["tokenizers", "jinja2"],  # checkpoint import/export reads safetensors itself
        "hf-test": ["torch", "transformers>=4.51"],  # live comparison with transformers (tests skip without)
        "gcs": ["gcsfs"],  # gs:// workdirs
        "math": ["math-verify[antlr4_13_2]>=0.9"],  # symbolic equivalence in rldyn.tasks.verify_math
        "parquet": ["pyarrow"],  # verl-style parquet task files
        "tpu": ["jax[tpu]"],  # libtpu: `python -m rldyn.plan --topology=v5p-64` compiles for TPU on any machine
        "tensorboard": ["tensorboardX"],
        "report": ["matplotlib"],
        "dev": ["pytest", "ruptures", "scipy", "matplotlib", "tensorboardX", "safetensors", "tokenizers",
                "jinja2", "math-verify[antlr4_13_2]>=0.9", "pyarrow"],
    },
    entry_points={
        "console_scripts": [
            "rldyn-train=rldyn.main:entry",
            "rldyn-phases=rldyn.phases.__main__:entry",
            "rldyn-replay=rldyn.replay.__main__:entry",
            "rldyn-roles=rldyn.roles.__main__:entry",
            "rldyn-compare=rldyn.compare:entry",
            "rldyn-oneshot=rldyn.oneshot:entry",
            "rldyn-distill=rldyn.distill:entry",
        ]
    },
)
