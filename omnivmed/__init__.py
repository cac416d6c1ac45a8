"""omnivmed: rebuild OmniV-Med-Instruct from public sources and train on it.

The card's folders install under this namespace:
``omnivmed.data`` (omnivmed_data/), ``omnivmed.builders`` (builders/),
``omnivmed.rejection_sampling`` (rejection_sampling/), ``omnivmed.trainer`` (trainer/).
"""

__version__ = "0.1.0"
