"""Run directory -> self-contained HTML report (``evalkit.reports``)."""
