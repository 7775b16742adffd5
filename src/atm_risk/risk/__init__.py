"""Risk scoring: runs and scores, the transparent baseline, later the model and backtests."""
