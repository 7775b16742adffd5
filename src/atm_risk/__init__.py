"""atm-risk: predict, rank and alert on explosive and ram-raid attacks on cash machines."""

__version__ = "0.1.0"
