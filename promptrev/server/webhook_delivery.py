"""The webhook deliverer of one server process: a daemon thread, started after the fork.

Every worker runs one (they share the work safely: a delivery is sent by the deliverer
whose claim on it succeeded). ``promptrev serve`` starts it in each gunicorn worker once
the app is built there and stops it when the worker exits; an app built by a test does
not start one unless the test asks (:func:`start_delivery`).
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from promptrev.registry import Registry
from promptrev.webhook_targets import TargetPolicy
from promptrev.webhooks import Deliverer, RetryPolicy

log = logging.getLogger("promptrev.webhooks")
EXTENSION = "promptrev_webhooks"


class DeliveryThread:
    """A :class:`promptrev.webhooks.Deliverer` running on its own registry connection."""

    def __init__(self, settings):
        self.settings = settings
        self.registry = Registry.open(settings.registry, index_url=settings.index_url,
                                      max_bytes=settings.max_bytes)
        self.deliverer = Deliverer(self.registry, retry=RetryPolicy.from_settings(settings),
                                   timeout=settings.webhook_timeout,
                                   targets=TargetPolicy.from_settings(settings))
        self.thread = threading.Thread(target=self._run, name="promptrev-webhooks",
                                       daemon=True)

    def start(self) -> DeliveryThread:
        """Start delivering in the background."""
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.deliverer.run(self.settings.webhook_poll)
        except Exception:  # never take the worker down; the log says why it stopped
            log.exception("webhook deliverer stopped")
        finally:
            self.registry.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish its attempt in progress and wait (at most ``timeout``)."""
        self.deliverer.stop()
        if self.thread.is_alive():
            self.thread.join(timeout)


def start_delivery(app: Flask) -> DeliveryThread | None:
    """Start the app's deliverer (once) unless the settings turn it off."""
    found = app.extensions.get(EXTENSION)
    if found is not None:
        return found
    settings = app.extensions["promptrev"].settings
    if not settings.webhook_deliverer:
        return None
    delivery = app.extensions[EXTENSION] = DeliveryThread(settings).start()
    return delivery


def stop_delivery(app: Flask) -> None:
    """Stop the app's deliverer, if it runs."""
    delivery = app.extensions.pop(EXTENSION, None)
    if delivery is not None:
        delivery.stop()
