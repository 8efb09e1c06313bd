"""Byte-level BPE tokenizers for code, trained with the `tokenizers` library.

The shipped model's tokenizer and the tiny tokenizers built inside the tests come from
`train_tokenizer`, so both load with `AutoTokenizer.from_pretrained(model_dir)` and
carry
the same special tokens. The end-of-span token is the tokenizer's `eos_token`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Order fixes the ids: pad=0, eos=1, bos=2 match DiffusionGemma's text-config defaults;
# the image ids are reserved so the vision tower's config points at real tokens.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<boi>", "<eoi>", "<image>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE over `texts`.

    Args:
        texts: training documents (source files).
        vocab_size: total vocabulary size, special tokens included.

    Returns:
        A fast tokenizer whose decode round-trips any text byte for byte.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        clean_up_tokenization_spaces=False,
    )
