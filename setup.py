from setuptools import find_packages, setup

setup(
    name="rcot_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of Residual-Conditioned Optimal Transport (RCOT, ICML 2024).",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rcot_jax", "rcot_jax.*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "ml_collections>=1.0",
        "clu>=0.0.12",
        "grain>=0.2.12",
        "tensorflow-cpu>=2.18",
        "tensorboard",
        "numpy",
        "pillow",
        "scipy",
        "scikit-image>=0.22",   # the embedded sample photographs
        "safetensors>=0.4",     # official weights in and out (rcot_jax.convert)
        "tifffile",             # 16-bit RGB TIFFs in and out (rcot_jax.restore)
        "tqdm",                 # restore's progress bars
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "torch==2.13.0"],
    },
)
