"""Edge Chat server: serves the page, the front end, exported model artifacts and a small catalog API.

No inference happens here; the browser runs the models. This package never imports model_prep.
"""

from app.server import create_app

__all__ = ["create_app"]
