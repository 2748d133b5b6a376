"""The `prefix_affinity` picking plugin (plugin.py; its formula in the class docstring)."""
