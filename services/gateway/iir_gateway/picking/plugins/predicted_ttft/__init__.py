"""The `predicted_ttft` picking plugin (plugin.py; its formula in the class docstring)."""
