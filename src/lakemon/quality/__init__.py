"""Data-quality checks: built-in rules as Spark Columns (:mod:`.checks`), Great Expectations suites
(:mod:`.gx`), suggested checks (:mod:`.suggest`) and their place in the run (:mod:`.compute`).

``checks`` and ``suggest`` import only pyspark; ``gx`` imports Great Expectations lazily.
"""
