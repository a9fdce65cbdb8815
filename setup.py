"""Installable with ``pip install -e .``; Dataflow ships it to workers with ``--setup_file``."""
from setuptools import find_namespace_packages, setup

TENSORFLOW = "tensorflow-cpu==2.21.0; platform_machine=='x86_64'"

setup(
    name="kepkreator",
    version="0.1.0",
    description="Synthetic, labelled EMNIST-style handwriting from conditional GANs, at dataset scale",
    python_requires=">=3.10",
    # Namespace discovery lists the asset folders (data only) too: with find_packages, newer
    # setuptools warns that they "would be ignored", though package_data ships their files.
    packages=find_namespace_packages(
        include=["kepkreator", "kepkreator.*", "pipeline", "pipeline.*"],
        exclude=["*.__pycache__"]),
    package_data={"kepkreator": ["assets/*/*/*.json", "assets/*/*/*.keras", "assets/*/*/*.npz"]},
    include_package_data=True,
    # The runtime is what local generation needs: Keras on JAX, a third of TensorFlow's size. The
    # rest is in extras; with [tensorflow] (or [train]) Keras runs on TensorFlow, faster on a CPU.
    # Pins as tested: requirements.txt (runtime) and requirements-test.txt (everything).
    install_requires=[
        "keras==3.15.1",
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "apache-beam==2.77.0",
        "google-crc32c==1.9.0",  # TFRecord framing
        "numpy==2.4.6",
        "pyarrow==25.0.1",
        "click==8.5.1",
        "pyyaml==6.0.3",
        "pillow==12.3.0",
    ],
    extras_require={
        "tensorflow": [TENSORFLOW],
        "dataflow": ["apache-beam[gcp]==2.77.0", "crcmod==1.7"],
        "serve": ["fastapi==0.165.0", "uvicorn==0.54.0"],
        "tune": [TENSORFLOW, "keras-tuner==1.4.7"],
        "train": [TENSORFLOW, "tensorboard==2.21.0"],
        "dask": ["apache-beam[dask]==2.77.0", "dask==2026.8.0", "distributed==2026.8.0"],
        "dev": [TENSORFLOW, "apache-beam[gcp,dask]==2.77.0", "crcmod==1.7", "fastapi==0.165.0",
                "dask==2026.8.0", "distributed==2026.8.0",
                "uvicorn==0.54.0", "keras-tuner==1.4.7", "tensorboard==2.21.0",
                "pytest==9.2.0", "pytest-xdist==3.8.0", "pandas==3.1.1",
                "tensorflow-datasets==4.9.10", "datasets==5.2.0", "httpx==0.28.1",
                "selenium==4.51.0", "pyinstrument==5.1.1"],
    },
    entry_points={"console_scripts": ["kepkreator=kepkreator.cli:main"]},
)
