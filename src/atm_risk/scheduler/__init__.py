"""Scheduled jobs (issue 7): job definitions (``jobs/*.toml``), the run history with its
exactly-once claims (``job_runs``), the job registry and the APScheduler service.

Importing this package starts nothing: only :func:`atm_risk.scheduler.service.run_scheduler`
(the ``atm-risk scheduler`` command) starts a scheduler.
"""
