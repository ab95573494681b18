"""catrans + seqmatch: sequence models that do more than next-token prediction."""
import pathlib

import setuptools

_README = pathlib.Path(__file__).with_name("README.md")

CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "grain==0.2.18",
    "chex==0.1.92",
    "absl-py>=2.1",
    "numpy>=1.26",
    "tqdm>=4.66",
    "tensorboardX>=2.6",
    "matplotlib>=3.8",
    "sentencepiece>=0.2",
]

setuptools.setup(
    name="catrans-seqmatch",
    version="0.1.0",
    description=("Conditional Attribute Transformers and SequenceMatch "
                 "in JAX/Flax, from a laptop CPU to a pod."),
    long_description=_README.read_text(encoding="utf-8") if _README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["catrans*", "seqmatch*", "experiments*"]),
    install_requires=CORE,
    extras_require={
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "nbclient==0.11.0",
                "nbformat==5.11.1", "ipykernel==7.4.0", "gguf==0.19.0",
                "tokenizers==0.23.3", "vaderSentiment==3.3.2"],
        "pretrained": ["gguf==0.19.0", "tokenizers==0.23.3"],
        "tpu": ["jax[tpu]==0.10.2"],
        # MAUVE for the text reports (faiss-cpu and scikit-learn come with it).
        "text-metrics": ["mauve-text==0.4.0"],
        "gpu": ["jax[cuda12]==0.10.2"],
        # Independent sentiment judges for steering (lexicon in the wheel; no download).
        "judges": ["vaderSentiment==3.3.2"],
    },
)
