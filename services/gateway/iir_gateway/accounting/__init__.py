"""What requests cost and may spend: limits, budgets, prices, spend and storage quotas."""
