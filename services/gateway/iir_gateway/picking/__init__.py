"""Endpoint picking among a model's replicas: Filter → weighted Scorers → Picker, assembled by policy name.

Each plugin lives in `plugins/<name>/` with a README stating its formula; `registry.py` maps plugin
type names to factories, and `policies.py` names the combinations users choose with
`IIR_ENDPOINT_PICKER`.
"""
