"""A character-level tokenizer in Hugging Face format, loadable by transformers and vLLM.

Byte-level BPE with no merges: every byte is one token, so every ASCII character is one token and any
text round-trips. This is the most travelled path through vLLM's incremental detokenizer (GPT-2 style).
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The byte-level, merge-free tokenizer: 256 byte tokens + end-of-text + padding."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # Order the byte symbols by the byte they stand for, so ids are stable across tokenizers versions.
    byte_symbols = sorted(alphabet, key=_byte_of_symbol)
    vocab = {symbol: index for index, symbol in enumerate(byte_symbols)}
    vocab[EOS_TOKEN] = len(vocab)
    vocab[PAD_TOKEN] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS_TOKEN, PAD_TOKEN])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    tokenizer.save_pretrained(out_dir)


def _byte_of_symbol(symbol: str) -> int:
    return _BYTE_OF_SYMBOL[symbol]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-unicode map, which ByteLevel uses for its alphabet."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


_BYTE_OF_SYMBOL = {symbol: byte for byte, symbol in _bytes_to_unicode().items()}
