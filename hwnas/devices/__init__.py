"""Analytical device descriptions shipped with hwnas (YAML roofline models), chosen by name."""
