"""AdaMerging: merge coefficients learned by entropy minimisation on unlabelled target-locale text."""
