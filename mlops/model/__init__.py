"""The model's parts: retrievers, candidates and their features, families, learners, ranking, the Recommender."""
