"""Many runs -> a static leaderboard site (``evalkit.leaderboard``).

``evalkit.leaderboard.site.build_site(run_dirs, out)`` is the API (``evalkit leaderboard build`` and
``evalkit nightly`` call it). Modules: ``runs`` reads run directories, ``tables`` holds the rules
(dataset-version groups, latest run per model, the overall), ``assets`` copies reports and writes
data and plotly.js, ``site`` renders the pages from ``templates/`` with ``static/`` inlined.
"""
