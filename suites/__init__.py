"""odeverify's asv benchmark suites (``"benchmark_dir": "suites"`` in asv.conf.json).

Not part of the odeverify package: asv imports this directory as the package ``suites``.
See ``suites/README.md``.
"""
