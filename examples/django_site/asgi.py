"""Django's ASGI app, served wrapped in middleware.toml:

    python -m datasette_configure_asgi serve examples.django_site.asgi:application --config examples/django_site/middleware.toml
"""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")

application = get_asgi_application()
