"""The Pareto dashboard of search studies (``stmsearch dashboard``).

``build.write_dashboard`` writes the self-contained page, ``server`` serves it live, ``figures``
draws from the trial records of :mod:`stmsearch.results`, and ``views`` validates the view
definitions in ``dashboards/``. Nothing is imported here, so importing a submodule stays light.
"""
