"""The tiny models' tokenizers in Hugging Face format, loadable by transformers and vLLM.

- `char` (the default): byte-level BPE with no merges: every byte is one token, so every ASCII
  character is one token and any text round-trips. This is the most travelled path through vLLM's
  incremental detokenizer (GPT-2 style).
- `bpe`: a real byte-level BPE tokenizer trained with the `tokenizers` library on the task's text, as
  Llama/Qwen-style models ship it: BOS added in front of encoded text by a post-processor, EOS, pad,
  and a ChatML-like chat template in tokenizer_config.json.
"""

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|startoftext|>"
IM_START_TOKEN = "<|im_start|>"

# ChatML-like: each turn opens with <|im_start|>role and closes with the tokenizer's own EOS (where
# ChatML has <|im_end|>), so an assistant turn stops on the same token a plain completion stops on, and
# core/tokenization.py's "completion ends with EOS" holds for chat samples too. The rendered text starts
# with BOS because chat prompts are tokenised without special tokens (transformers'
# apply_chat_template and vLLM's chat path both pass add_special_tokens=False), so the BOS a plain
# prompt gets from the post-processor has to come from the template here.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles are system, user and assistant, not ' ~ message['role']) }}"
    "{% endif %}"
    "{{ '" + IM_START_TOKEN + "' ~ message['role'] ~ '\\n' ~ message['content'] ~ eos_token ~ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '" + IM_START_TOKEN + "assistant\\n' }}{% endif %}"
)

# Qwen2's pre-tokenisation regex: words with one leading non-letter, each digit alone, punctuation runs,
# whitespace. Digits stay single tokens as in Qwen2 and Llama because whole-number tokens make the
# arithmetic task a 90x90 lookup table: with GPT-2's regex ("17", "25" and "42" one token each) the
# warm-started policy reached 0.02 held-out greedy accuracy against the char model's ~0.2.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Merges beyond what the task's text supports are never learnt (the trainer stops when no pair occurs
# twice); the cap only matters for richer text. A few hundred merges is more than the keywords, names
# and operators of `code` need.
DEFAULT_BPE_MERGES = 400


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


def build_bpe_tokenizer(texts: Iterable[str], merges: int = DEFAULT_BPE_MERGES) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` with at most `merges` merges.

    Ids: the special tokens first (BOS, EOS, pad, <|im_start|>), then the 256 byte symbols, then the
    merged tokens, as the trainer lays them out. Pre-tokenisation is Qwen2's (`QWEN2_SPLIT`, then
    bytes), so merges join letters, spaces and punctuation but never digits: "17+25=" stays 6 tokens,
    and a 37-byte `code` prompt becomes 19. (Prompt and answer are tokenised apart, as the actors do.)
    """
    specials = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IM_START_TOKEN]
    core = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(specials) + 256 + merges,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, seen or not: no unknowns
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    bos_id = core.token_to_id(BOS_TOKEN)
    # BOS in front of encoded text, as Llama/Qwen-style tokenizers with add_bos do; vLLM tokenises a
    # text prompt with add_special_tokens=True, so prompts get it there and in core/tokenization.py.
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START_TOKEN],
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    # The chat template goes into tokenizer_config.json, where older transformers and tools look,
    # rather than transformers 5's separate chat_template.jinja.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)


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
