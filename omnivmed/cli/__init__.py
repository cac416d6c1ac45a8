"""The app's command lines: omnivmed-data (cli/data/) and omnivmed-train (cli/train.py)."""
