"""The `round_robin` picking plugin (plugin.py; its formula in the class docstring)."""
