"""The OpenAI CLIP byte-pair tokenizer, as open_clip's `SimpleTokenizer(clean='lower')` runs it.

MMAudio tokenizes prompts with `open_clip.get_tokenizer('ViT-H-14-378-quickgelu')`; the ids must be the
same or the text features are not. The contract (open_clip 3.3.0):
- clean: `ftfy.fix_text`, `html.unescape` twice, strip; collapse whitespace (`str.split`), lower-case;
- split with a `regex` pattern (the special tokens, English contractions, runs of letters `\\p{L}`,
  single digits `\\p{N}`, runs of anything else but whitespace);
- each piece as UTF-8 bytes mapped to printable characters, then BPE with `</w>` on the last symbol,
  merging the lowest-ranked pair everywhere (left to right, no overlaps) until no ranked pair is left;
- `[49406] + ids + [49407]`, zero padded to 77; a longer one is cut to 77 with its last id set to 49407.

`ftfy` and `regex` are imported on first use so importing this module stays cheap.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

import torch

CONTEXT_LENGTH = 77
START_OF_TEXT, END_OF_TEXT = "<start_of_text>", "<end_of_text>"
MERGE_COUNT = 49152 - 256 - 2  # merges in use: the vocabulary is 2 x 256 byte symbols + merges + 2 specials
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
PACKAGED_VOCAB = Path(__file__).resolve().parent / "clip_vocab" / VOCAB_FILE
_SPLIT_PATTERN = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"MMAudio's CLIP tokenizer needs the '{name}' package to clean and split prompts "
                          f"exactly as the model was trained: pip install {name}") from exc


@lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """Byte -> one printable character: printable Latin-1 bytes stand for themselves, the others
    (controls, space, soft hyphen ...) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def clean_lower(text: str) -> str:
    """open_clip's clean='lower': repair the text, unescape HTML twice, collapse whitespace, lower-case."""
    text = _import("ftfy").fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip().lower()


def default_vocab_path() -> Path:
    """An installed open_clip's copy of the merges (found without importing open_clip), else ours."""
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / VOCAB_FILE
        if installed.is_file():
            return installed
    return PACKAGED_VOCAB


class ClipTokenizer:
    """Prompts -> `[B, 77]` int64 ids, exactly as open_clip's SimpleTokenizer with clean='lower'."""

    def __init__(self, vocab_path: str | Path | None = None, context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length must leave room for the start and end tokens, got {context_length}")
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        try:
            lines = gzip.open(path).read().decode("utf-8").split("\n")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise FileNotFoundError(f"cannot read the CLIP BPE merges '{path}' ({exc}); reinstall the package "
                                    f"or pass the {VOCAB_FILE} of open_clip as vocab_path") from exc
        merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]
        if len(merges) != MERGE_COUNT or any(len(pair) != 2 for pair in merges):
            raise ValueError(f"'{path}' is not the CLIP BPE merges file ({VOCAB_FILE}): expected {MERGE_COUNT} "
                             "merge lines of two symbols after the header")
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.ids = {piece: index for index, piece in enumerate(vocab)}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.ids[START_OF_TEXT], self.ids[END_OF_TEXT]
        self.vocab_size = len(vocab)
        self.context_length = context_length
        self._byte_symbols = byte_symbols()
        self._pattern = _import("regex").compile(_SPLIT_PATTERN, _import("regex").IGNORECASE)
        self.word_ids = lru_cache(maxsize=1 << 16)(self._word_ids)

    def _merge(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """Apply the merges: the best-ranked adjacent pair, everywhere, until none is ranked."""
        unranked = len(self.merge_ranks)
        while len(symbols) > 1:
            pairs = list(zip(symbols, symbols[1:]))
            best = min(pairs, key=lambda pair: self.merge_ranks.get(pair, unranked))
            if best not in self.merge_ranks:
                break
            merged, index = [], 0
            while index < len(symbols):
                if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == best:
                    merged.append(symbols[index] + symbols[index + 1])
                    index += 2
                else:
                    merged.append(symbols[index])
                    index += 1
            symbols = tuple(merged)
        return symbols

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """The ids of one piece of `split` (cached as `word_ids`)."""
        if word in (START_OF_TEXT, END_OF_TEXT):  # typed literally, they are the special tokens
            return (self.ids[word],)
        encoded = "".join(self._byte_symbols[b] for b in word.encode("utf-8"))
        symbols = (*encoded[:-1], encoded[-1] + "</w>")
        return tuple(self.ids[piece] for piece in self._merge(symbols))

    def split(self, text: str) -> list[str]:
        """The cleaned prompt cut into the pieces that BPE runs on."""
        return self._pattern.findall(clean_lower(text))

    def encode(self, text: str) -> list[int]:
        """The BPE ids of one prompt, without the start/end tokens and without truncation."""
        return [i for word in self.split(text) for i in self.word_ids(word)]

    def __call__(self, prompts: str | list[str]) -> torch.Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        result = torch.zeros(len(prompts), self.context_length, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids = [self.sot_token_id, *self.encode(prompt), self.eot_token_id][: self.context_length]
            ids[-1] = self.eot_token_id  # a cut prompt still ends with the end token
            result[row, : len(ids)] = torch.tensor(ids)
        return result


@lru_cache(maxsize=4)
def default_tokenizer(context_length: int = CONTEXT_LENGTH) -> ClipTokenizer:
    return ClipTokenizer(context_length=context_length)


def tokenize(prompts: str | list[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """`open_clip.get_tokenizer('ViT-H-14-378-quickgelu')(prompts)`: `[B, context_length]` int64."""
    return default_tokenizer(context_length)(prompts)
