"""Operators (banks, ATM networks) and, later, principals and API keys."""
