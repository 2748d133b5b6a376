"""The `low_load_filter` picking plugin (plugin.py; its formula in the class docstring)."""
