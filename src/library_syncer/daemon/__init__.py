"""Long-running processes: scheduling (cron, jitter, retry), server and client daemons."""
