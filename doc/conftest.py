"""Collection of the documentation's doctests (``>>>`` examples in the .rst pages).

The Sphinx configuration and the files Sphinx generates (the gallery's copies
of the example scripts, which would run on import, the API stubs and the
built pages) are no tests.
"""

collect_ignore = ["conf.py"]
collect_ignore_glob = ["_build", "auto_examples", "generated", "sg_execution_times.rst"]
