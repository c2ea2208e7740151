"""The search: a pymoo problem over the integer encoding, algorithms, budgets as constraints, the
job store and Pareto-front queries."""
