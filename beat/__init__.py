"""Periodic checks run by Celery beat (`celery -A detektr beat`)."""
