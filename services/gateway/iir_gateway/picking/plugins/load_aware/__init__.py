"""The `load_aware` picking plugin (plugin.py; its formula in the class docstring)."""
