"""Celery GPU workers on Redis: the queue that runs training, prediction and sweep jobs."""
