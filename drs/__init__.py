"""The code the dynamic risk assessment system's scripts share, one concern a module.

The top-level scripts (ingestion.py, training.py, ..., fullprocess.py) are what a user
runs; they import this package, never the other way round. Importing it is cheap:
the cron tick uses drs.config, drs.files and drs.history before anything heavy loads.
"""
