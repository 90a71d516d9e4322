"""Package metadata for icrl.

The folder ``envs/`` is installed as the subpackage ``icrl.envs`` (``package_dir``), so no
top-level ``envs`` module lands in site-packages (PyPI has an unrelated package of that name).
"""
from setuptools import find_packages, setup

setup(
    name="icrl",
    version="0.1.0",
    description="In-context reinforcement learning: learning histories, AD and DPT, online evaluation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["icrl", "icrl.*"])
    + ["icrl.envs"]
    + ["icrl.envs." + p for p in find_packages("envs")],
    package_dir={"icrl.envs": "envs"},
    package_data={"icrl": ["py.typed", "results.schema.json"]},
    install_requires=[
        "torch>=2.2,<3",
        "gymnasium>=1.1,<2",
        "numpy>=1.24",
        "h5py>=3.8",
        "safetensors>=0.4",
        "matplotlib>=3.7",
        "PyYAML>=6",
        "tqdm>=4.60",
        "wandb>=0.16",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "jsonschema>=4", "setuptools>=70.1", "wheel"],
        "ray": ["ray>=2.9"],
        # Meta-World ML1 and Half-Cheetah-Vel (envs/metaworld.py, envs/half_cheetah_vel.py);
        # metaworld 3.1.1 pins mujoco==3.3.0, which gymnasium[mujoco] 1.x accepts.
        "mujoco": ["metaworld==3.1.1", "gymnasium[mujoco]>=1.1,<2"],
    },
    entry_points={"console_scripts": ["icrl = icrl.cli:main"]},
)
