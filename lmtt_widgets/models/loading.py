"""Load a Hugging Face causal LM as it is: hub name, local path, already-loaded model, or the embedded default."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError, UnsupportedModelError
from . import embedded
from .adapters import ArchitectureAdapter, adapter_for


@dataclass
class LoadedModel:
    """A model ready to trace: the user's own ``transformers`` model, its tokenizer and its adapter."""

    model: torch.nn.Module
    tokenizer: object
    adapter: ArchitectureAdapter
    name: str
    # how each block's attention weights are recorded ("interface" or "module_attn"), decided from the model's own
    # classes when it is loaded (tracing/capture.py)
    capture_routes: tuple[str, ...] = ()

    @property
    def config(self):
        return self.model.config


def load_model(
    source="smollm2",
    tokenizer=None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    **from_pretrained_kwargs,
) -> LoadedModel:
    """Load a causal LM to explain.

    Args:
        source: ``"smollm2"`` (the embedded SmolLM2-135M-Instruct), a hub name or local directory, or an
            already-loaded ``transformers`` model (then pass its ``tokenizer`` too).
        tokenizer: a tokenizer for an already-loaded model, or to override the one found beside the weights.
        dtype: e.g. ``torch.bfloat16``; default float32 on CPU.
        device: e.g. ``"cuda"``; default CPU.
        from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (``revision``, ``device_map``...).

    The weights you give are the weights used: nothing is converted or re-downloaded.
    """
    if isinstance(source, LoadedModel):
        return source
    if isinstance(source, torch.nn.Module):
        model = source
        if tokenizer is None:
            raise ModelLoadError(
                "An already-loaded model needs its tokenizer: load_model(model, tokenizer). "
                "Load it with transformers.AutoTokenizer.from_pretrained(<same name or path>)."
            )
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        path = embedded.converted_dir() if name == embedded.EMBEDDED_NAME else _resolve(name)
        model, tokenizer = _from_pretrained(path, tokenizer, dtype, from_pretrained_kwargs)
    else:
        raise ModelLoadError(
            f"load_model expects 'smollm2', a hub name, a local path or a transformers model, not {type(source).__name__}."
        )
    _check_causal_lm(model)
    _check_transformers_version()
    adapter = adapter_for(model)
    if device is not None:
        model.to(device)
    if dtype is not None and isinstance(source, torch.nn.Module):
        model.to(_as_dtype(dtype))
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, name=name,
                       capture_routes=_capture_routes(model, adapter))


def _capture_routes(model, adapter: ArchitectureAdapter) -> tuple[str, ...]:
    from ..tracing.capture import capture_route

    blocks = model.get_submodule(adapter.blocks)
    if adapter.capture != "auto":
        return (adapter.capture,) * len(blocks)
    return tuple(capture_route(b.get_submodule(adapter.attention)) for b in blocks)


def _check_transformers_version() -> None:
    """Warn, once, when the installed transformers lies outside the range this package declares (and CI tests)."""
    global _version_checked
    if _version_checked:
        return
    _version_checked = True
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    try:
        reqs = [Requirement(r) for r in requires("lmtt-widgets") or ()]
    except PackageNotFoundError:  # running from a source tree that was never installed: nothing declared
        return
    spec = next((r.specifier for r in reqs if r.name == "transformers" and not r.marker), None)
    installed = _installed_transformers()
    if spec is not None and installed not in spec:
        warnings.warn(
            f"transformers {installed} is outside the range lmtt-widgets is tested with "
            f"(transformers{spec}). Its internals change between releases: tracing checks its own identities and "
            f"raises when they break, but install a tested release to be safe: pip install 'transformers{spec}'.",
            RuntimeWarning, stacklevel=3,
        )


_version_checked = False


def _installed_transformers() -> str:
    from importlib.metadata import version

    return version("transformers")


def _as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return getattr(torch, str(dtype).removeprefix("torch."))
    except AttributeError as exc:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use e.g. torch.float32 or 'bfloat16'.") from exc


def _resolve(name: str) -> str:
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} exists but holds no config.json; point at a directory saved by save_pretrained.")
        return str(path)
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_like_path:
        raise ModelLoadError(f"No model directory at {path}. Check the path, or pass a Hugging Face hub name.")
    return name


def _from_pretrained(path, tokenizer, dtype, kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_as_dtype(dtype or torch.float32), **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "It is neither a local directory nor a model in your Hugging Face cache"
            + (" (HF_HUB_OFFLINE=1 forbids downloads)." if offline else ", or the hub cannot be reached.")
            + " Use the embedded model with load_model('smollm2'), a local path, or a cached hub name."
        )
        if "Unrecognized configuration class" in str(exc) or "does not recognize this architecture" in str(exc):
            raise UnsupportedModelError(f"{path} is not a causal language model that transformers can load: {exc}") from None
        raise ModelLoadError(f"Could not load model {str(path)!r}. {hint}\n(transformers said: {str(exc).splitlines()[0]})") from None
    return model, tokenizer


def _check_causal_lm(model) -> None:
    if getattr(model.config, "is_encoder_decoder", False):
        adapter_for(model)  # raises the encoder-decoder message
    if model.get_output_embeddings() is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no language-model head, so it predicts no tokens. "
            "Load it with AutoModelForCausalLM rather than AutoModel."
        )
    if getattr(model.config, "is_decoder", True) is False and not _is_causal_family(model):
        raise UnsupportedModelError(f"{type(model).__name__} is not a causal (left-to-right) language model.")


def _is_causal_family(model) -> bool:
    return "CausalLM" in type(model).__name__ or "LMHead" in type(model).__name__
