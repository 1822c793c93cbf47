"""The optimizer (``mmdk optimize``): a search space per tower, an Optuna study over recipes run by the pipeline
runner, workers (processes, machines, SSH devices), the Pareto report and the best trial as a recipe.

A layer above ``pipeline/``: it imports the pipeline and the passes; nothing below imports it.
"""
