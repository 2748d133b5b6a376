"""The pipeline's steps, one module each, in the order `app.py` lists them."""
