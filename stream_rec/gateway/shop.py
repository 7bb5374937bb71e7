"""The demo shop's catalogue: the generated items with a display name and a category.

The generator's items have ids and categories only; a display name is made from the category's
query words (``Leather Boots 12``), so that what a person searches for in the shop is what the
generated shoppers search for, and the search events carry the same signal.
"""

from __future__ import annotations

from typing import Any

__all__ = ["catalogue_items"]


def catalogue_items(n_items: int) -> list[dict[str, Any]]:
    """[{"item_id", "name", "category"}] of the generated catalogue of ``n_items`` items."""
    from ..generate import Catalogue, GeneratorConfig

    cfg = GeneratorConfig(n_items=n_items, n_categories=min(GeneratorConfig.n_categories, n_items))
    cat = Catalogue.build(cfg.n_items, cfg.n_categories, cfg.related_per_item, cfg.catalogue_seed)
    out = []
    for j, item_id in enumerate(cat.item_ids):
        c = int(cat.item_category[j])
        nouns, modifiers = cat.words[c][:2], cat.words[c][2:]
        name = f"{modifiers[j % 2].title()} {nouns[(j // 2) % 2].title()} {j + 1}"
        out.append({"item_id": item_id, "name": name, "category": cat.words[c][0].title()})
    return out
