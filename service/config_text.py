"""config.pbtxt text -> ModelConfig, accepting the Triton fields our schema subset leaves out.

protos/inference/model_config.proto holds the part of Triton's ModelConfig that convserve uses.
A real Triton config may carry more (`model_warmup`, `sequence_batching`, `secondary_devices`,
...): those are skipped and named, so the caller can log them once, as DESIGN.md promises.
Everything goes through protobuf's public text_format API:

1. `Tokenizer` walks the text against the message descriptors and collects the qualified names
   of the fields the schema does not have (the outermost ones: fields inside a skipped message
   are not separate findings).
2. `Parse(..., allow_unknown_field=True)` fills the message, after one normalisation: Triton
   writes lists of messages without a colon (`model_warmup [ { ... } ]`), a form protobuf's
   parser accepts for known fields only; inserting the colon (`model_warmup: [ ... ]`, equally
   valid text format) lets it skip unknown ones too.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import Message

# A string literal, a comment, or a field name directly followed by '[' (no colon between).
_TOKENS = re.compile(
    r"""(?P<skip>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|\#[^\n]*)"""
    r"""|(?P<name>\b[A-Za-z_][A-Za-z0-9_]*)(?P<gap>\s*)(?=\[)"""
)
_CLOSE = {"{": "}", "<": ">"}


def parse(text: str, message: Message) -> list[str]:
    """Fill `message` from protobuf text; return the fields skipped as `Message.field` names.

    text_format.ParseError for text that is not protobuf text format at all.
    """
    skipped: list[str] = []
    _walk_message(text_format.Tokenizer(text.split("\n")), message.DESCRIPTOR, skipped, top=True)
    text_format.Parse(_colon_before_lists(text), message, allow_unknown_field=True)
    return skipped


def _colon_before_lists(text: str) -> str:
    def fix(match: re.Match[str]) -> str:
        if match.group("skip") is not None:
            return match.group(0)
        return f"{match.group('name')}:{match.group('gap')}"

    return _TOKENS.sub(fix, text)


def _walk_message(
    tok: text_format.Tokenizer, descriptor: Any, skipped: list[str], *, top: bool
) -> None:
    """Read fields until the closing brace (or the end at top level); record unknown ones.

    `descriptor` None: inside a skipped field, where nothing more is recorded.
    """
    while not tok.AtEnd():
        if not top and (tok.LookingAt("}") or tok.LookingAt(">")):
            return
        name = tok.ConsumeIdentifierOrNumber()
        field: Any = None
        if descriptor is not None:
            field = descriptor.fields_by_name.get(name)
            if field is None:
                skipped.append(f"{descriptor.name}.{name}")
        inner = field.message_type if field is not None else None
        tok.TryConsume(":")
        if tok.TryConsume("["):
            while not tok.TryConsume("]"):
                _walk_value(tok, inner, skipped)
                tok.TryConsume(",")
        else:
            _walk_value(tok, inner, skipped)
        if not tok.TryConsume(","):
            tok.TryConsume(";")


def _walk_value(tok: text_format.Tokenizer, inner: Any, skipped: list[str]) -> None:
    for opening, closing in _CLOSE.items():
        if tok.TryConsume(opening):
            _walk_message(tok, inner, skipped, top=False)
            tok.Consume(closing)
            return
    if tok.TryConsumeByteString():
        while tok.TryConsumeByteString():  # adjacent literals concatenate: "a" "b"
            pass
        return
    tok.TryConsume("-")  # "- 8": the sign as a token of its own
    if tok.AtEnd() or tok.token in ("{", "}", "<", ">", "[", "]", ":", ",", ";"):
        raise text_format.ParseError(f"expected a value, got {tok.token or 'the end'!r}")
    tok.NextToken()  # one scalar: a number (with its sign), an enum name, true/false
