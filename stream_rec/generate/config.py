"""How big the generated shop is and how its shoppers behave: one frozen, validated config."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["BROWSE_SHARE", "GeneratorConfig"]

# The share of a session's clicks that stay in its category (following a related item, picking
# one, or going back to one seen); the rest wander off to another category.
BROWSE_SHARE = 0.97


@dataclass(frozen=True)
class GeneratorConfig:
    """How big the shop is and how its shoppers behave. Every field has a sane default."""

    n_users: int = 10_000
    n_items: int = 5_000
    n_categories: int = 24
    seed: int = 7  # the shoppers: preferences, sessions, timing
    catalogue_seed: int = 0  # the shop: categories, popularity, related items, words
    mean_session_len: float = 8.0  # events per session, mean (at least 1)
    max_session_len: int = 60
    search_rate: float = 0.6  # sessions that start with a search
    purchase_rate: float = 0.15  # sessions with a purchase
    related_per_item: int = 4
    follow_related: float = 0.6  # next click follows a related item of the last click
    revisit_rate: float = 0.25  # a returning shopper opens with an item seen before
    # A click goes back to an item clicked earlier in the same session (comparing, reconsidering).
    # Shop logs differ most here: a fifth of Diginetica's next clicks repeat one of the session's
    # items, some shops' logs nearly half.
    backtrack_rate: float = 0.04
    mean_days_between_sessions: float = 1.5  # per shopper, mean; shoppers vary around it
    start_ts: int = 1_700_000_000_000  # epoch ms of the simulated clock's start
    # A drifting catalogue (0 = the fixed one): new items launched per simulated day, each in a
    # category drawn by interest, trending with a popularity that rises and falls over about
    # `trend_days` (peak at trend_days, retired after 6x), taking `trend_share` of the picks in
    # its category while it trends. Seeded by (catalogue_seed, seed).
    launches_per_day: float = 0.0
    trend_days: float = 2.0
    trend_share: float = 0.35

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_categories", "max_session_len", "related_per_item"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.n_categories > self.n_items:
            raise ConfigError(
                f"n_categories ({self.n_categories}) must not exceed n_items ({self.n_items})"
            )
        if not 1.0 <= self.mean_session_len <= self.max_session_len:
            raise ConfigError(
                f"mean_session_len must be in [1, max_session_len={self.max_session_len}]; "
                f"got {self.mean_session_len}"
            )
        for name in ("search_rate", "purchase_rate", "follow_related", "revisit_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        if not 0.0 <= self.backtrack_rate <= BROWSE_SHARE - self.follow_related:
            raise ConfigError(
                f"backtrack_rate must be in [0, {BROWSE_SHARE - self.follow_related:.2f}] "
                f"({BROWSE_SHARE} less follow_related, {self.follow_related}); "
                f"got {self.backtrack_rate}"
            )
        if self.launches_per_day < 0 or self.trend_days <= 0 or not 0 <= self.trend_share <= 1:
            raise ConfigError(
                "launches_per_day must be >= 0, trend_days > 0 and trend_share in [0, 1]; got "
                f"{self.launches_per_day}, {self.trend_days}, {self.trend_share}"
            )
        if self.mean_days_between_sessions <= 0:
            raise ConfigError(
                f"mean_days_between_sessions must be > 0; got {self.mean_days_between_sessions}"
            )
        if self.start_ts < 0:
            raise ConfigError(f"start_ts must be >= 0 (epoch ms); got {self.start_ts}")
