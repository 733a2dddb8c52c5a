"""Where each Hugging Face architecture keeps the parts the tracer hooks.

An adapter is data, not code: module paths relative to the causal-LM root (``blocks``) or to one block (the rest).
Register your own with :func:`register_adapter`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal

from ..errors import UnsupportedModelError

Topology = Literal["sequential", "parallel", "post_norm"]


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Module layout of one architecture family.

    Attributes:
        blocks: dotted path of the list of decoder blocks, from the ``*ForCausalLM`` root.
        attention: the attention module inside a block.
        attn_out_proj: the attention output projection inside a block (its input is split into heads).
        mlp_out_proj: the MLP output projection inside a block (its input holds the neuron activations).
        attn_norm / mlp_norm: pre-norms inside a block (``mlp_norm`` is None where one norm is shared).
        attn_post_norm / mlp_post_norm: norms applied ON the attention / MLP output (Gemma 2/3 sandwich).
        final_norm: the final norm, from the root.
        topology: how a block adds its updates; a callable receives the config (GPT-NeoX decides per config).
        capture: how attention weights are recorded. "auto" (default) decides per attention module from what its
            class does in the installed transformers (tracing/capture.py: a release may move a family between
            the two); "interface" forces transformers' AttentionInterface, "module_attn" the module's ``_attn``.
    """

    blocks: str
    attention: str
    attn_out_proj: str
    mlp_out_proj: str
    attn_norm: str
    mlp_norm: str | None
    final_norm: str
    topology: Topology | Callable[[object], Topology] = "sequential"
    attn_post_norm: str | None = None
    mlp_post_norm: str | None = None
    capture: Literal["auto", "interface", "module_attn"] = "auto"

    def resolve_topology(self, config) -> Topology:
        return self.topology(config) if callable(self.topology) else self.topology


_LLAMA_LIKE = ArchitectureAdapter(
    blocks="model.layers",
    attention="self_attn",
    attn_out_proj="self_attn.o_proj",
    mlp_out_proj="mlp.down_proj",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    final_norm="model.norm",
)
_GEMMA2_LIKE = dataclasses.replace(
    _LLAMA_LIKE,
    mlp_norm="pre_feedforward_layernorm",
    attn_post_norm="post_attention_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    topology="post_norm",
)

_REGISTRY: dict[str, ArchitectureAdapter] = {
    "gpt2": ArchitectureAdapter(
        blocks="transformer.h",
        attention="attn",
        attn_out_proj="attn.c_proj",
        mlp_out_proj="mlp.c_proj",
        attn_norm="ln_1",
        mlp_norm="ln_2",
        final_norm="transformer.ln_f",
    ),
    "opt": ArchitectureAdapter(
        blocks="model.decoder.layers",
        attention="self_attn",
        attn_out_proj="self_attn.out_proj",
        mlp_out_proj="fc2",
        attn_norm="self_attn_layer_norm",
        mlp_norm="final_layer_norm",
        final_norm="model.decoder.final_layer_norm",
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "phi3": dataclasses.replace(_LLAMA_LIKE),
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
    "gpt_neox": ArchitectureAdapter(
        blocks="gpt_neox.layers",
        attention="attention",
        attn_out_proj="attention.dense",
        mlp_out_proj="mlp.dense_4h_to_h",
        attn_norm="input_layernorm",
        mlp_norm="post_attention_layernorm",
        final_norm="gpt_neox.final_layer_norm",
        topology=lambda cfg: "parallel" if getattr(cfg, "use_parallel_residual", True) else "sequential",
    ),
    "phi": ArchitectureAdapter(
        blocks="model.layers",
        attention="self_attn",
        attn_out_proj="self_attn.dense",
        mlp_out_proj="mlp.fc2",
        attn_norm="input_layernorm",
        mlp_norm=None,
        final_norm="model.final_layernorm",
        topology="parallel",
    ),
    "gptj": ArchitectureAdapter(
        blocks="transformer.h",
        attention="attn",
        attn_out_proj="attn.out_proj",
        mlp_out_proj="mlp.fc_out",
        attn_norm="ln_1",
        mlp_norm=None,
        final_norm="transformer.ln_f",
        topology="parallel",
    ),
}

# Designs the exact decomposition does not cover, with the reason shown to the user.
_UNSUPPORTED_REASONS = {
    "mixtral": "its MLP is a mixture of experts: a token's MLP update is routed through a few experts, which the "
    "neuron decomposition does not cover yet",
    "qwen2_moe": "its MLP is a mixture of experts, which the neuron decomposition does not cover yet",
    "qwen3_moe": "its MLP is a mixture of experts, which the neuron decomposition does not cover yet",
    "t5": "it is an encoder-decoder model; information-flow routes are defined here for decoder-only causal LMs",
    "bart": "it is an encoder-decoder model; information-flow routes are defined here for decoder-only causal LMs",
    "bert": "it is not a causal language model (bidirectional attention)",
    "roberta": "it is not a causal language model (bidirectional attention)",
}


def register_adapter(model_type: str, adapter: ArchitectureAdapter, *, overwrite: bool = False) -> None:
    """Teach lmtt-widgets a new architecture, keyed by ``config.model_type``.

    Example::

        from lmtt_widgets import ArchitectureAdapter, register_adapter
        register_adapter("my_llama", ArchitectureAdapter(blocks="model.layers", attention="self_attn",
            attn_out_proj="self_attn.o_proj", mlp_out_proj="mlp.down_proj", attn_norm="input_layernorm",
            mlp_norm="post_attention_layernorm", final_norm="model.norm"))
    """
    if model_type in _REGISTRY and not overwrite:
        raise ValueError(f"an adapter for {model_type!r} exists already; pass overwrite=True to replace it")
    _REGISTRY[model_type] = adapter


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(model) -> ArchitectureAdapter:
    """The adapter for a loaded model, or an error saying why its design is unsupported."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{model_type!r} is an encoder-decoder model; lmtt-widgets explains decoder-only causal LMs "
            "(GPT-2, OPT, Llama, Mistral, Qwen, Gemma, Pythia, Phi, GPT-J)."
        )
    if model_type in _UNSUPPORTED_REASONS:
        raise UnsupportedModelError(f"{model_type!r} is not supported: {_UNSUPPORTED_REASONS[model_type]}.")
    if getattr(config, "num_local_experts", 0) or getattr(config, "num_experts", 0):
        raise UnsupportedModelError(
            f"{model_type!r} uses a mixture-of-experts MLP, which the neuron decomposition does not cover yet."
        )
    if model_type == "opt" and (
        not getattr(config, "do_layer_norm_before", True)
        or getattr(config, "word_embed_proj_dim", config.hidden_size) != config.hidden_size
    ):
        raise UnsupportedModelError(
            "this OPT checkpoint (like facebook/opt-350m) is post-LayerNorm with projected embeddings: its residual "
            "updates are normalised after they are added, so they cannot be split exactly. Use another OPT size."
        )
    if model_type not in _REGISTRY:
        raise UnsupportedModelError(
            f"no adapter for model_type {model_type!r}. Supported: {', '.join(supported_model_types())}. "
            "If it is a decoder-only causal LM, describe its modules with lmtt_widgets.register_adapter(...)."
        )
    return _REGISTRY[model_type]


def get_submodule(root, dotted: str):
    return root.get_submodule(dotted)
