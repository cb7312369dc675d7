"""The batch job's request: which users to score, from which histories, which items may be recommended.

Files are read here (:mod:`recsys.inference.files`) and resolved by the :class:`Recommender`, so every
input error (unknown ids under ``data.unknown_ids: error``, unreadable files) is raised before anything is
written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from recsys.config import ConfigError
from recsys.data.errors import EmptyResultError
from recsys.inference.files import read_histories_located, read_id_file
from recsys.inference.ids import ITEM_ID, USER_ID
from recsys.inference.recommender import Recommender, Requests

__all__ = ["JobRequest", "check_k", "read_request"]


def check_k(k: int) -> None:
    """``k`` must be positive (``--k`` / ``inference.k``)."""
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k} (--k / inference.k)")


@dataclass(frozen=True)
class JobRequest:
    """What ``recsys recommend`` scores: the resolved :class:`Requests`, the item filter and its counts."""

    requests: Requests
    blocked: Tensor | None
    unknown_filter_items: int
    sources: dict[str, str]


def read_request(
    recommender: Recommender,
    users: str | Path,
    histories: Path | None,
    allow: Path | None = None,
    deny: Path | None = None,
    *,
    dataset: Path | None = None,
) -> JobRequest:
    """Read the users / histories / allow / deny files and resolve them against ``recommender``.

    Users given in ``--histories`` are scored from that history only. With a users file, only the listed
    users are scored (from ``--histories`` when they are there, else from the dataset); with ``all``,
    every dataset user and every ``--histories`` user is. An empty users or allow file, or one whose ids
    are all unknown and dropped, is an error naming it (never a silently empty output); an empty deny
    file denies nothing. ``dataset`` names the known users' source in those errors.
    """
    sources = {"users": str(users), **({"histories": str(histories)} if histories else {})}
    frame, locate = read_histories_located(histories) if histories is not None else (None, None)
    everyone = str(users) == "all"
    requests = recommender.requests(
        "all" if everyone else read_id_file(users, USER_ID),
        frame,
        users_source=None if everyone else Path(users),
        histories_source=histories,
        histories_locate=locate,
    )
    if not len(requests.histories):
        raise EmptyResultError(
            f"none of the listed users is in the prepared dataset {dataset}"
            + (" or in --histories" if histories is not None else "")
            + f" ({requests.unknown_users} unknown, dropped by data.unknown_ids: drop)",
            path=users,
            column=USER_ID,
            expected="at least one user the model can score",
        )
    allowed = read_id_file(allow, ITEM_ID) if allow is not None else None
    if allowed is not None and not (recommender.items.lookup(allowed) >= 0).any():
        raise EmptyResultError(
            f"none of the {len(allowed)} allow-list item id(s) is known to the model, e.g. "
            f"{allowed.head(5).to_list()}; every recommendation would be filtered out",
            path=allow,
            column=ITEM_ID,
            expected="items of the model's vocabulary",
        )
    denied = read_id_file(deny, ITEM_ID, allow_empty=True) if deny is not None else None
    blocked, unknown = recommender.blocked(allowed, denied, sources=(allow, deny))
    return JobRequest(requests, blocked, unknown, sources)
