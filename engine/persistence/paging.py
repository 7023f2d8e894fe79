"""Page tokens that carry the last key of the previous page (keyset paging).

Both store backends page domains and schedules by a unique text key in key order; the token
is that key behind a short tag, so a token of one list is refused by another and callers
treat it as opaque.
"""

from __future__ import annotations

from engine.errors import BadRequestError


def key_token(tag: bytes, last_key: str) -> bytes:
    """The token of the page after the one that ended at `last_key`."""
    return tag + last_key.encode("utf-8")


def key_after(tag: bytes, token: bytes, what: str) -> str | None:
    """The key a page starts after (None: the first page).

    Raises:
        BadRequestError: the token was not made by `key_token` with this tag.
    """
    if not token:
        return None
    if not token.startswith(tag):
        raise BadRequestError(f"invalid {what} page token")
    try:
        return token[len(tag) :].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"invalid {what} page token") from exc


def check_page_size(page_size: int) -> None:
    if page_size < 1:
        raise ValueError(f"page_size must be positive, got {page_size}")
