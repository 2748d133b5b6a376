"""Providers: where a `<provider>/<model>` request goes. Each is a small class behind `Provider`."""
