"""Supernet training (sandwich rule, distillation, Ray Train workers), BN recalibration, evaluation."""
