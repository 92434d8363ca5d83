"""Versioned price tables: the default one shipped with promptrev, or the operator's.

A table is a YAML file in the format of :func:`~promptrev.evaluation.costs.price_table`
(a ``prices:`` mapping) with a ``version`` and an ``as_of`` date, so that a cost shown in
a diff can name the table it came from::

    version: acme-2026-11
    as_of: 2026-11-30
    prices:
      gpt-4o: {input_per_1m: 2.50, output_per_1m: 10.00}

``promptrev/data/prices.yaml`` is the default (OpenAI list prices on its ``as_of`` date:
operators should check current ones); ``PROMPTREV_PRICES`` (``Settings.prices_file``)
names the operator's file, which replaces it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import read_settings_file
from ..errors import InvalidRequest
from .costs import Price, price_table

DEFAULT_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "data", "prices.yaml")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")  # gpt-4o-2024-08-06: a dated snapshot


@dataclass(frozen=True)
class PriceTable:
    """Prices by model name, and which table they are: its version, date and file."""

    prices: dict[str, Price]
    version: str
    as_of: str | None = None
    source: str = "default"  # "default" or the operator's file

    def price(self, model: str | None) -> tuple[str, Price] | None:
        """The entry pricing ``model``: its own, its undated name's, else ``default``.

        ``gpt-4o-2024-08-06`` is priced as ``gpt-4o`` when the table has no entry for
        the snapshot itself. Returns (the entry's name, its price), or None.
        """
        for name in (model, _SNAPSHOT.sub("", model or ""), "default"):
            if name and name in self.prices:
                return name, self.prices[name]
        return None

    def to_dict(self) -> dict[str, Any]:
        """What a view shows of the table (not the prices themselves)."""
        return {"version": self.version, "as_of": self.as_of, "source": self.source}


def load_price_table(path: str | None = None) -> PriceTable:
    """The operator's table at ``path`` (PROMPTREV_PRICES), else the default one."""
    if not path:
        return _read(DEFAULT_FILE, "default")
    return _read(path, path)


def price_table_from(config: Mapping[str, Any], source: str) -> PriceTable:
    """A table from an already-read mapping; a missing ``version`` becomes its digest."""
    if not isinstance(config, Mapping):
        raise InvalidRequest(f"price table {source}: expected a mapping with 'prices'")
    meta = ("version", "as_of")
    prices = price_table(config if "prices" in config else
                         {k: v for k, v in config.items() if k not in meta})
    version = config.get("version")
    if version is None:  # still name the table: the same prices always get the same name
        digest = hashlib.sha256(repr(sorted(prices.items())).encode()).hexdigest()[:12]
        version = f"unversioned-{digest}"
    as_of = config.get("as_of")
    return PriceTable(prices, str(version), None if as_of is None else str(as_of), source)


def _read(path: str, source: str) -> PriceTable:
    return price_table_from(read_settings_file("PROMPTREV_PRICES", path), source)
