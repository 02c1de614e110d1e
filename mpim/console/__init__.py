"""The console's page: static files (HTML, CSS, a small canvas chart, the app) served by the router.

No build step and nothing from a CDN: :mod:`mpim.router.console` inlines these
files into one HTML answer.
"""
