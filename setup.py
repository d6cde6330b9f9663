"""victr-jax: VicTR (video-conditioned text representations) in JAX/Flax.

Every dependency is pinned to a set that installs together and passes `pip check`
(Python 3.11).
"""
import setuptools

INSTALL_REQUIRES = [
    # JAX stack.
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "clu==0.0.12",
    "absl-py==2.5.1",
    "einops==0.8.2",
    "numpy==2.4.6",
    # Data.
    "tensorflow-cpu==2.21.0",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "array-record==0.8.6",
    "importlib-resources==7.1.0",  # TFDS builders inside a package need it.
    "av==18.1.0",  # PyAV video decoding.
    "pillow==13.0.0",
    # Storage: data_pipelines/gpath.py, local paths and gs:// (gcsfs through etils.epath).
    "etils[epath]==1.15.0",
    "fsspec==2026.9.0",
    "gcsfs==2026.10.1",
    # Tokenizer.
    "ftfy==6.3.1",
    "regex==2026.11.19",
    # Logging, pictures, progress.
    "tensorboard==2.21.0",  # clu's metric writers; tensorflow 2.21 no longer pulls it in.
    "matplotlib==3.11.2",
    "tqdm==4.70.1",
]

EXTRAS_REQUIRE = {
    # Test suite and the PyTorch references it checks the port against.
    "test": [
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",  # scripts/test.sh runs the suite on 2 worker processes
        "execnet==2.1.2",
        "gcp-storage-emulator==2026.7.19",  # tests/test_storage.py: Cloud Storage on 127.0.0.1
        "torch==2.14.1",
        "torchvision==0.29.1",
        "open-clip-torch==3.3.0",
        "transformers==5.24.0",
        "safetensors==0.8.0",
        "nbformat==5.11.1",
        "nbclient==0.11.0",
        "ipykernel==7.4.0",
        # --mode=compile: XLA's TPU compiler, to compile for a slice on a CPU host.
        "libtpu==0.0.42.1",
    ],
    # Checkpoint import from PyTorch formats (OpenAI TorchScript .pt, .bin, .safetensors).
    "torch": ["torch==2.14.1", "safetensors==0.8.0"],
    # Accelerators: install one of these on a GPU or TPU host.
    "cuda": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="victr-jax",
    version="0.1.0",
    description="VicTR: video-conditioned text representations for activity recognition, in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    # Two top-level packages, victr_jax and data_pipelines; the repository's configs/ ships
    # inside the first as victr_jax/configs/ (config_lib.shipped_config finds either).
    packages=setuptools.find_packages(
        include=["victr_jax", "victr_jax.*", "data_pipelines", "data_pipelines.*"])
    + ["victr_jax.configs"],
    package_dir={"victr_jax.configs": "configs"},
    package_data={"victr_jax.clip": ["*.txt.gz", "LICENSE-*.txt"],
                  "victr_jax.configs": ["README.md"],
                  "victr_jax.reproduce": ["published.json"],
                  "data_pipelines": ["classnames/*.txt", "prompts/*.txt", "prompts/*/*.txt"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "victr-convert-clip=victr_jax.clip.convert:main",
            "victr-prepare=data_pipelines.prepare:main",
            "victr-classify=victr_jax.classify:main",
            "victr-reproduce=victr_jax.reproduce.cli:main",
        ],
    },
)
