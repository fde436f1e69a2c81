"""The token ids of the answer letters in the served model's vocabulary.

`logit_bias` is keyed by token id, and ids belong to one tokenizer: the judge
reads the served model's own `tokenizer.json` (a local file, or the model
directory that holds it; nothing is downloaded) and checks that every letter
is one token, so a bias on it can only ever produce that letter.
"""

from __future__ import annotations

from pathlib import Path

from varro.judging.base import LETTERS, JudgeError


def letter_token_ids(tokenizer_path: str) -> dict[str, int]:
    """{"A": id, ...} for every letter a round can show; JudgeError naming the problem otherwise."""
    path = Path(tokenizer_path).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise JudgeError(f"judge.http_tokenizer: no tokenizer.json at {path}")
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # the tokenizers library raises a bare Exception on a bad file
        raise JudgeError(f"judge.http_tokenizer: {file} cannot be read: {exc}") from None
    ids = {}
    for letter in LETTERS:
        encoded = tokenizer.encode(letter, add_special_tokens=False).ids
        if len(encoded) != 1:
            raise JudgeError(
                f"judge.http_tokenizer: the letter {letter!r} is {len(encoded)} tokens in {file}, "
                "so logit_bias cannot constrain the answer to it"
            )
        ids[letter] = encoded[0]
    if len(set(ids.values())) != len(ids):
        raise JudgeError(f"judge.http_tokenizer: two letters share a token id in {file}")
    return ids
