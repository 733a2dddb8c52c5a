"""Tiny random models of every supported family, built offline from configs."""

from __future__ import annotations

import torch
import transformers as tf

V, P, D = 128, 64, 64
COMMON = dict(vocab_size=V)

CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(n_layer=2, n_head=4, n_embd=D, n_positions=P, **COMMON),
    "opt": lambda: tf.OPTConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=D, ffn_dim=128,
                                word_embed_proj_dim=D, max_position_embeddings=P, **COMMON),
    "llama": lambda: tf.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=D,
                                    intermediate_size=128, max_position_embeddings=P, **COMMON),
    "mistral": lambda: tf.MistralConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        hidden_size=D, intermediate_size=128, max_position_embeddings=P,
                                        sliding_window=4, **COMMON),
    "qwen2": lambda: tf.Qwen2Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=D,
                                    intermediate_size=128, max_position_embeddings=P, **COMMON),
    "qwen3": lambda: tf.Qwen3Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=D,
                                    intermediate_size=128, head_dim=32, max_position_embeddings=P, **COMMON),
    "gemma": lambda: tf.GemmaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, hidden_size=D,
                                    intermediate_size=128, head_dim=32, max_position_embeddings=P, **COMMON),
    "gemma2": lambda: tf.Gemma2Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      hidden_size=D, intermediate_size=128, head_dim=16, sliding_window=4,
                                      max_position_embeddings=P, **COMMON),
    "gpt_neox": lambda: tf.GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=D,
                                         intermediate_size=128, rotary_pct=0.25, max_position_embeddings=P, **COMMON),
    "phi": lambda: tf.PhiConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=D, intermediate_size=128,
                                partial_rotary_factor=0.5, max_position_embeddings=P, pad_token_id=0, **COMMON),
    "phi3": lambda: tf.Phi3Config(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=D,
                                  intermediate_size=128, max_position_embeddings=P, pad_token_id=0, bos_token_id=1,
                                  eos_token_id=2, **COMMON),
    "gptj": lambda: tf.GPTJConfig(n_layer=2, n_head=4, n_embd=D, rotary_dim=8, n_positions=P, **COMMON),
}
FAMILIES = sorted(CONFIGS)
EAGER_ONLY = {"gemma2", "gptj"}


class ToyTokenizer:
    """One token per ASCII character, id = code point (offline stand-in for a real tokenizer)."""

    def __call__(self, text, return_tensors="pt"):
        ids = torch.tensor([[ord(c) if ord(c) < V else 1 for c in text]], dtype=torch.long)
        return type("Enc", (), {"input_ids": ids})()

    def decode(self, ids, **kwargs):
        return "".join(chr(i) if 32 <= i < 127 else f"<{i}>" for i in ids)

    def convert_ids_to_tokens(self, i):
        return f"<{i}>"


def build(family: str, *, dtype=torch.float64, attn="eager", seed: int = 0, config_overrides=None):
    cfg = CONFIGS[family]()
    for k, v in (config_overrides or {}).items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype)
    # Random init leaves norm gains at 1 and biases at 0: perturb them so bugs in their handling show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def loaded(family: str, **kw):
    from lmtt_widgets import load_model

    return load_model(build(family, **kw), ToyTokenizer())
