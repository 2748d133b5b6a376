"""`python -m iir_simbackend`: runs the simulated vLLM server."""

from __future__ import annotations

import logging

from aiohttp import web

from iir_common.logging import setup_logging
from iir_simbackend.app import create_app
from iir_simbackend.settings import SimSettings


def main() -> None:
    settings = SimSettings()
    setup_logging("simbackend")
    logging.getLogger("iir_simbackend").info(
        "simulated vLLM listening", extra={"port": settings.port, "models": settings.model_names}
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=None,
        handle_signals=True,
        # Like vLLM, stop generating when the client goes away.
        handler_cancellation=True,
        backlog=2048,
    )


if __name__ == "__main__":
    main()
