"""Load a Hugging Face causal LM as it is: hub name, local path, already-loaded model, or the embedded default."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import (
    HubUnreachableError, ModelLoadError, ModelNotFoundError, ModelTypeError, TokenizerMissingError,
    UnsupportedModelError, WeightsMissingError,
)
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
    if dtype is not None:
        _as_dtype(dtype)  # refused before anything is loaded or changed
    if isinstance(source, torch.nn.Module):
        model = source
        if not hasattr(model, "config") or not hasattr(model, "get_input_embeddings"):
            raise ModelTypeError(
                f"load_model expects a transformers causal language model (e.g. from "
                f"AutoModelForCausalLM.from_pretrained), not a bare {type(model).__name__} module."
            )
        if tokenizer is None:
            raise TokenizerMissingError(
                "An already-loaded model needs its tokenizer: load_model(model, tokenizer). "
                "Load it with transformers.AutoTokenizer.from_pretrained(<same name or path>)."
            )
        tokenizer = _tokenizer_given(tokenizer)
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    elif isinstance(source, (str, os.PathLike)):
        name = str(source)
        if not name.strip():  # an empty name would be read as the current directory
            raise ModelNotFoundError("The model name is empty; give 'smollm2', a hub name such as "
                                     "'HuggingFaceTB/SmolLM2-135M-Instruct' or the directory save_pretrained wrote.")
        tokenizer = None if tokenizer is None else _tokenizer_given(tokenizer)
        if name == embedded.EMBEDDED_NAME:
            path = embedded.converted_dir()
        else:
            path = _resolve(name, need_tokenizer=tokenizer is None, revision=from_pretrained_kwargs.get("revision"))
        model, tokenizer = _from_pretrained(path, tokenizer, dtype, from_pretrained_kwargs)
    else:
        raise ModelTypeError(
            f"load_model expects 'smollm2', a hub name, a local path or a transformers model, not {type(source).__name__}."
        )
    _check_causal_lm(model)
    _check_transformers_version()
    adapter = adapter_for(model)
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ModelLoadError(f"Unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:0'.") from None
        if device.type == "meta":  # (moving there drops every weight: nothing would be left to explain)
            raise ModelLoadError("device='meta' holds no data; use e.g. 'cpu' or 'cuda'.")
        try:
            model.to(device)
        except (RuntimeError, AssertionError) as exc:  # no CUDA in this torch, or no such device index
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            cuda = f", cuda:0..cuda:{n - 1}" if n else ""
            raise ModelLoadError(f"Cannot move the model to {device}: {exc}. Available: cpu{cuda}.") from None
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
        found = dtype
    else:
        found = getattr(torch, str(dtype).removeprefix("torch."), None) if isinstance(dtype, str) else None
    if not isinstance(found, torch.dtype):
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use e.g. torch.float32 or 'bfloat16'.")
    if not found.is_floating_point:
        raise ModelLoadError(f"dtype {found} is not a floating-point type; use torch.float32, torch.bfloat16 or "
                             "torch.float16 (quantized weights load through from_pretrained's own options).")
    return found


def _tokenizer_given(tokenizer):
    """A tokenizer object, or one loaded from a name or path given in its place."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as exc:
            raise TokenizerMissingError(f"Could not load the tokenizer {str(tokenizer)!r}: {_first_line(exc)}") from None
    if not callable(tokenizer) or not hasattr(tokenizer, "decode"):
        raise ModelTypeError(
            f"tokenizer must be a transformers tokenizer (or its name or path), not {type(tokenizer).__name__}."
        )
    return tokenizer


# Files that hold a model's weights, and files that hold a tokenizer's vocabulary (tokenizer_config.json alone
# does not: transformers then builds an EMPTY tokenizer without complaint).
_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.gguf", "tf_model*.h5", "flax_model*.msgpack")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "merges.txt", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model", "*.tiktoken")


def _has(path: Path, patterns) -> bool:
    return any(next(path.glob(p), None) is not None for p in patterns)


def _resolve(name: str, *, need_tokenizer: bool, revision=None) -> str:
    """A local directory checked for config, weights and tokenizer, or a hub name checked against the cache."""
    path = Path(name).expanduser()
    try:
        exists = path.exists()
    except OSError as exc:  # a name too long for the filesystem (ENAMETOOLONG) cannot be a directory here
        raise ModelNotFoundError(f"{name[:80]!r}... ({len(name)} characters) is no usable path ({exc.strerror}) "
                                 "and no hub name; give 'smollm2', a hub name or a model directory.") from None
    if exists:
        if not path.is_dir():
            raise ModelNotFoundError(
                f"{path} is a file; point at the directory that holds config.json and the weights (what "
                "save_pretrained wrote)."
            )
        if not (path / "config.json").is_file():
            hint = (" It holds a PEFT adapter (adapter_config.json): merge it into its base model first "
                    "(model = PeftModel.from_pretrained(base, path).merge_and_unload()) and pass load_model(model, "
                    "tokenizer).") if (path / "adapter_config.json").is_file() else ""
            raise ModelNotFoundError(
                f"{path} exists but holds no config.json; point at a directory saved by save_pretrained.{hint}")
        if not _has(path, _WEIGHT_FILES):
            present = ", ".join(sorted(p.name for p in path.iterdir())[:8])
            raise WeightsMissingError(
                f"{path} holds config.json but no weights (model.safetensors or pytorch_model.bin); it holds: "
                f"{present}. Save the model there with model.save_pretrained({str(path)!r}), or point at the "
                "directory that holds the weights."
            )
        if need_tokenizer and not _has(path, _TOKENIZER_FILES):
            raise TokenizerMissingError(_no_tokenizer(str(path)))
        return str(path)
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1)
    if looks_like_path:
        raise ModelNotFoundError(f"No model directory at {path}. Check the path, or pass a Hugging Face hub name.")
    if not _in_hub_cache(name, revision) and _offline():
        raise HubUnreachableError(
            f"{name!r} is not in your Hugging Face cache and offline mode (HF_HUB_OFFLINE=1) forbids downloading it. "
            f"Download it once with a network connection (hf download {name}), unset HF_HUB_OFFLINE, or pass a "
            "local directory. The embedded model needs no download: load_model('smollm2')."
        )
    return name


def _no_tokenizer(where: str) -> str:
    return (
        f"{where} holds the weights but no tokenizer (tokenizer.json, vocab.json or tokenizer.model). Pass one: "
        f"load_model({where!r}, tokenizer=AutoTokenizer.from_pretrained(<the base model>)), or save it beside the "
        f"weights with tokenizer.save_pretrained({where!r}), or load the model yourself and call "
        "load_model(model, tokenizer)."
    )


def _in_hub_cache(name: str, revision) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    except ValueError:  # not a valid repository name
        raise ModelNotFoundError(
            f"{name!r} is neither a local directory nor a valid Hugging Face hub name (like 'gpt2' or "
            "'Qwen/Qwen2.5-0.5B'). Check the spelling or the path."
        ) from None


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.upper() in ("1", "ON", "YES", "TRUE") for f in flags)


def _from_pretrained(path, tokenizer, dtype, kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=_as_dtype(dtype or torch.float32), **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        if "Unrecognized configuration class" in str(exc) or "does not recognize this architecture" in str(exc):
            raise UnsupportedModelError(f"{path} is not a causal language model that transformers can load: {exc}") from None
        raise _classify_load_failure(str(path), exc) from None
    if _vocabulary_size(tokenizer) < 2:  # transformers built an empty tokenizer from a config without a vocabulary
        raise TokenizerMissingError(_no_tokenizer(str(path)))
    return model, tokenizer


def _vocabulary_size(tokenizer) -> int:
    try:
        return len(tokenizer)
    except TypeError:
        return 2**31  # a tokenizer without __len__: nothing to check


def _classify_load_failure(name: str, exc: Exception) -> ModelLoadError:
    """Tell an unreachable hub from a name the hub does not know from anything else."""
    said = f"(transformers said: {_first_line(exc)})"
    chain, e = [], exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    kinds = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if kinds & {"RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"} or \
            "not a valid model identifier" in text:
        return ModelNotFoundError(
            f"There is no model {name!r} on the Hugging Face hub, or it is private or gated (log in with "
            f"`hf auth login` and accept its license). Check the spelling, or pass a local directory. {said}"
        )
    if kinds & {"ConnectError", "ConnectionError", "ConnectTimeout", "Timeout", "OfflineModeIsEnabled",
                "LocalEntryNotFoundError"} or "couldn't connect" in text or "offline" in text:
        return HubUnreachableError(
            f"Could not load {name!r}: it is not in your Hugging Face cache and the hub cannot be reached. Check the "
            "network (or a proxy, or HF_ENDPOINT), or pass a local directory; the embedded model needs no "
            f"download: load_model('smollm2'). {said}"
        )
    return ModelLoadError(f"Could not load model {name!r}. {said}")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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
