"""Translations between the OpenAI wire format the gateway speaks and other providers' formats."""
