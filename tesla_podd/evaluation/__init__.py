"""Evaluation of a synthetic set: protocols (protocol.py), stacked/sequential training (trainer.py), model
selection (selection.py), units for parallel jobs (units.py), eval.json (report.py); the eval stage in
stages/evaluate.py drives them."""
