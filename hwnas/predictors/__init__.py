"""Learned estimators with the scikit-learn fit / predict API, and their holdout quality."""
from hwnas.predictors.accuracy import AccuracyPredictor, ArchFeatures
from hwnas.predictors.quality import regression_quality

__all__ = ["AccuracyPredictor", "ArchFeatures", "regression_quality"]
