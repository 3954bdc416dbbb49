"""Sub-commands of the ``evalkit`` CLI that live in their own modules (compare, nightly, merge,
leaderboard). Each module imports only typer at module level, so ``evalkit --help`` stays fast."""
