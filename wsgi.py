"""WSGI entry point, from this folder:

    gunicorn --bind 127.0.0.1:8000 --workers 2 --worker-class gthread --threads 8 wsgi:app

The config comes from $DRS_CONFIG (else config.json beside the scripts). Building the
app at import is the WSGI contract; create_app reads nothing from the deployment yet.
"""

from drs.web.factory import create_app

app = create_app()
