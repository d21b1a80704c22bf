"""Models: LightGBM on features, the set transformer, and the ranker that combines them."""
