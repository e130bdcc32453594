"""Browser tests: the dashboard in real headless Chromium."""
