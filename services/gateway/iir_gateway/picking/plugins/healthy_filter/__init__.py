"""The `healthy_filter` picking plugin (plugin.py; its formula in the class docstring)."""
