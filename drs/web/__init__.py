"""The web layer: the app factory, the JSON API and the client managers' page."""
