"""The `max_score` picking plugin (plugin.py; its formula in the class docstring)."""
