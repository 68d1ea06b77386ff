from setuptools import find_packages, setup

# Lower bounds are the versions CI tests (the newest on Python 3.11 when they were last raised). TensorFlow is not
# required: the core, the data pipeline and the training loop run without it (a Colab runtime keeps its own). The
# `tf` extra adds it for the command-line install on a local machine: `pip install -e ".[tf]"` (TensorBoard event
# files; without TensorFlow, train.py logs its scalars to WORKDIR/metrics.jsonl instead). numpy, pillow, scipy and
# matplotlib are left to the runtime (jax asks numpy>=2.0 and scipy>=1.14): Colab's own packages pin them.
setup(
    name="rcot_jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of Residual-Conditioned Optimal Transport (RCOT, ICML 2024).",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rcot_jax", "rcot_jax.*"]),
    python_requires=">=3.11",
    # jax 0.10.x is the newest on Python 3.11; Colab runs Python 3.13 (CI tests 3.11).
    classifiers=["Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
                 "Programming Language :: Python :: 3.13"],
    install_requires=[
        "jax>=0.10.2",          # pulls the matching jaxlib
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "tensorflow-datasets>=4.9.10",   # prepared datasets, read without TensorFlow
        "ml_collections>=1.1.0",
        "clu>=0.0.12",
        "grain>=0.2.18",
        "numpy",
        "pillow",
        "scipy",
        "matplotlib",           # rcot_jax.ablate's plot
        "scikit-image>=0.26",   # the embedded sample photographs
        "safetensors>=0.8",     # official weights in and out (rcot_jax.convert)
        "tifffile>=2026.3.3",   # 16-bit RGB TIFFs in and out (rcot_jax.restore)
        "tqdm>=4.70",           # restore's progress bars
    ],
    extras_require={
        "tf": ["tensorflow-cpu>=2.21", "tensorboard>=2.21"],
        # Compiling the train step for a TPU slice on any host (`rcot_jax.benchmark --mode=aot`): libtpu, pinned
        # by the installed jax's own `tpu` extra (jax 0.10.2: libtpu 0.0.42.*, 0.7 GB installed).
        "tpu-aot": ["jax[tpu]>=0.10.2"],
        # ONNX exports (`rcot_jax.export --format=onnx`) and running them (`restore --exported=map.onnx`)
        "onnx": ["onnx>=1.23", "onnxruntime>=1.32"],
        "test": ["pytest>=9.2", "pytest-xdist>=3.8", "torch==2.13.0", "onnx>=1.23", "onnxruntime>=1.32",
                 # the notebook test executes notebooks/ headless
                 "nbclient>=0.11", "nbformat>=5.11", "ipykernel>=7.4", "jupytext>=1.19"],
    },
)
