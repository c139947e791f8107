"""Customer value: RFM scores, BG/NBD and Gamma-Gamma lifetime value, net value."""
