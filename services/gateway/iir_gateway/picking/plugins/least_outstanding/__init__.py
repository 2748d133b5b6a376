"""The `least_outstanding` picking plugin (plugin.py; its formula in the class docstring)."""
