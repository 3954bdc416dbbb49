"""Many runs -> a static leaderboard site (``evalkit.leaderboard``).

The run directory format (DESIGN.md) is the input; the site builder itself belongs to the
reports/leaderboard issue and is not part of this package yet.
"""
