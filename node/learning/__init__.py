"""One node's machine learning: models, training, the weight codec, aggregation, behaviours.

Submodules are imported directly (`node.learning.codec`, ...): the codec and the aggregators do
not need torch, and the ledger should be able to validate a model without loading it.
"""
