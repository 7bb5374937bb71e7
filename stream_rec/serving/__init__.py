"""Serving a bundle: reading and validating it (``bundle``), turning settings and a bundle into
a recommender (``compose``: the one place settings reach the core), the model in service and
its hot swap (``holder``), and what a worker counts (``stats``)."""
