"""The search: a pymoo problem over the integer encoding, algorithms, budgets as constraints, the
predictor-in-the-loop rounds, custom search over user callables, and Pareto-front queries."""
