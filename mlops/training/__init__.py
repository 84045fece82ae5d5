"""LightGBM training, evaluation, MLflow logging and promotion (see `train`, `steps`)."""
