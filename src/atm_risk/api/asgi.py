"""The ASGI entry point for servers started with an import string (several workers):
``uvicorn atm_risk.api.asgi:app``. Settings come from the environment (ATM_RISK_...)."""

from atm_risk.api.app import create_app

app = create_app()
