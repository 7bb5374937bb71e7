"""The generated shop: items in categories, their popularity, related items and query words.

Category popularity is skewed; item popularity within a category is Zipf. Each category has a
few query words ("boots", "leather") so that searches carry signal, and each item a few
*related* items (mostly in its category) that the next click often follows. The catalogue
depends only on ``(n_items, n_categories, related_per_item, catalogue_seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Catalogue"]

# Query words per category: two nouns, then two modifiers. Past these, made-up words.
_THEMES = (
    ("boots", "chelsea", "leather", "waterproof"), ("jacket", "parka", "down", "hooded"),
    ("dress", "gown", "floral", "maxi"), ("jeans", "denim", "slim", "bootcut"),
    ("sneakers", "trainers", "running", "mesh"), ("watch", "chronograph", "steel", "analog"),
    ("headphones", "earbuds", "wireless", "bluetooth"), ("phone", "smartphone", "unlocked", "5g"),
    ("laptop", "notebook", "ultrabook", "touchscreen"), ("lamp", "lantern", "led", "dimmable"),
    ("sofa", "couch", "velvet", "sectional"), ("mattress", "pillow", "memory", "foam"),
    ("skillet", "pan", "nonstick", "castiron"), ("knife", "cleaver", "santoku", "forged"),
    ("espresso", "grinder", "barista", "burr"), ("tea", "kettle", "loose", "matcha"),
    ("tent", "tarp", "ultralight", "camping"), ("backpack", "rucksack", "hiking", "daypack"),
    ("bicycle", "bike", "gravel", "tubeless"), ("helmet", "visor", "mips", "vented"),
    ("perfume", "cologne", "eau", "musk"), ("lipstick", "gloss", "matte", "nude"),
    ("serum", "moisturizer", "retinol", "hyaluronic"), ("shampoo", "conditioner", "sulfate", "keratin"),
    ("drill", "driver", "cordless", "brushless"), ("saw", "jigsaw", "circular", "blade"),
    ("stroller", "pram", "toddler", "foldable"), ("diapers", "wipes", "newborn", "hypoallergenic"),
    ("lego", "blocks", "bricks", "buildable"), ("puzzle", "jigsawpuzzle", "1000", "pieces"),
    ("novel", "paperback", "thriller", "bestseller"), ("cookbook", "recipes", "vegan", "baking"),
    ("guitar", "ukulele", "acoustic", "strings"), ("keyboard", "piano", "midi", "weighted"),
    ("yoga", "mat", "cork", "nonslip"), ("dumbbell", "kettlebell", "adjustable", "weights"),
    ("collar", "leash", "puppy", "reflective"), ("litter", "scratcher", "kitten", "clumping"),
    ("monitor", "display", "ultrawide", "144hz"), ("mouse", "trackball", "ergonomic", "gaming"),
)  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ren", "to", "sa", "vel", "dor", "ni", "bra", "qui", "zen")


def _made_up_word(rng: np.random.Generator) -> str:
    return "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), 3))


@dataclass(frozen=True)
class Catalogue:
    """The shop. Item index j (0-based) is item id ``item_ids[j]``."""

    item_ids: tuple[str, ...]
    item_category: np.ndarray  # (n_items,) int category of each item
    category_items: tuple[np.ndarray, ...]  # per category: its items, most popular first
    category_weight: np.ndarray  # (n_categories,) share of shopper interest, sums to 1
    item_weight: np.ndarray  # (n_items,) popularity within its category, sums to 1 per category
    related: np.ndarray  # (n_items, related_per_item) related item indices
    words: tuple[tuple[str, ...], ...]  # per category: query words, nouns first

    @classmethod
    def build(cls, n_items: int, n_categories: int, related_per_item: int, seed: int) -> Catalogue:
        rng = np.random.default_rng(seed)
        width = max(5, len(str(n_items)))
        item_ids = tuple(f"i{j:0{width}d}" for j in range(1, n_items + 1))
        cat_weight = 1.0 / np.arange(1, n_categories + 1) ** 0.9  # category 0 is the biggest
        cat_weight /= cat_weight.sum()
        # Category sizes follow interest loosely; every category has at least one item.
        sizes = 1 + rng.multinomial(n_items - n_categories, 0.5 * cat_weight + 0.5 / n_categories)
        item_category = rng.permutation(np.repeat(np.arange(n_categories), sizes))
        item_weight = np.zeros(n_items)
        category_items = []
        for c in range(n_categories):
            members = rng.permutation(np.flatnonzero(item_category == c))  # by popularity rank
            item_weight[members] = 1.0 / np.arange(1, len(members) + 1) ** 1.1  # Zipf
            item_weight[members] /= item_weight[members].sum()
            category_items.append(members)
        related = np.empty((n_items, related_per_item), np.int64)
        for c in range(n_categories):
            members = category_items[c]
            neighbour = category_items[(c + 1) % n_categories]  # a complementary category
            p_in = np.sqrt(item_weight[members])
            p_in /= p_in.sum()
            for j in members:
                picks = rng.choice(members, size=related_per_item, p=p_in)
                across = rng.random(related_per_item) < 0.1
                picks[across] = rng.choice(neighbour, size=int(across.sum()))
                picks[picks == j] = members[0] if j != members[0] else neighbour[0]
                related[j] = picks
        words = []
        seen: set[str] = set()
        for c in range(n_categories):
            theme = list(_THEMES[c]) if c < len(_THEMES) else []
            while len(theme) < 4:
                w = _made_up_word(rng)
                if w not in seen:
                    theme.append(w)
            seen.update(theme)
            words.append(tuple(theme))
        return cls(
            item_ids, item_category, tuple(category_items), cat_weight, item_weight, related,
            tuple(words),
        )  # fmt: skip

    def category_of(self, item_id: str) -> int:
        return int(self.item_category[int(item_id[1:]) - 1])
