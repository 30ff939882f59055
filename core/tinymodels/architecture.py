"""The tiny Qwen2 shape shared by every model the project builds (policy, reward model, NLI model):
sizes from the recipe, vocabulary and special tokens from the tokenizer, fp32 weights."""

from typing import Any

from transformers import PreTrainedTokenizerFast, Qwen2Config


def tiny_qwen2_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_positions: int,
    **head: Any,
) -> Qwen2Config:
    """`head` carries what differs by model: tied embeddings for the policy, labels for classifiers."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        # The char tokenizer has no BOS; end-of-text then stands in, as in GPT-2.
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **head,
    )
