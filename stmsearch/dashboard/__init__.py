"""The Pareto dashboard of search studies (``stmsearch dashboard``).

``build.write_dashboard`` writes the self-contained page, ``server`` serves it live,
``trials.load_trials`` / ``trials.pareto_mask`` read studies per the trial-record contract,
and ``views`` validates the view definitions in ``dashboards/``. Nothing is imported here, so
``stmsearch export`` does not load plotly.
"""
