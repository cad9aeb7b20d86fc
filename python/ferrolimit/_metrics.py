"""OpenTelemetry metrics of a limiter created with `meter=`.

Instruments (all attributed with `limiter_name` when the limiter is named):

- `ferrolimit.running` (observable gauge): slots held;
- `ferrolimit.waiting` (observable gauge): callers queued;
- `ferrolimit.wait_time` (histogram, seconds): how long callers that had to wait waited for
  their slot;
- `ferrolimit.rejected` (counter): arrivals refused because the queue was full.

The gauges are read by the metric reader when it collects, and the histogram and the counter are
recorded only on the slow path, so taking a free slot costs nothing more with metrics on.
"""

# The native module's internals have underscore names, to keep them off its public API; they
# are this package's own.
# pyright: reportPrivateUsage=false

from __future__ import annotations as _annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ._ferrolimit import _Counts as Counts

__all__ = ('LimiterMetrics',)


class LimiterMetrics:
    """The instruments of one limiter; the native limiter calls `waited()` and `rejected()`."""

    def __init__(self, meter: Meter, name: str | None, counts: Counts):
        """Create the instruments on `meter`; `counts` reads the limiter's current counts."""
        self._attributes: dict[str, str] = {} if name is None else {'limiter_name': name}
        attributes = self._attributes

        def running(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(counts.stats().running, attributes)

        def waiting(_options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(counts.stats().waiting, attributes)

        meter.create_observable_gauge(
            'ferrolimit.running', callbacks=[running], unit='{slot}', description='Slots held'
        )
        meter.create_observable_gauge(
            'ferrolimit.waiting', callbacks=[waiting], unit='{caller}', description='Callers queued for a slot'
        )
        self._wait_time = meter.create_histogram(
            'ferrolimit.wait_time', unit='s', description='Time callers that had to wait waited for their slot'
        )
        self._rejected = meter.create_counter(
            'ferrolimit.rejected', unit='{caller}', description='Arrivals refused because the queue was full'
        )

    def waited(self, seconds: float) -> None:
        """Record a completed wait."""
        self._wait_time.record(seconds, self._attributes)

    def rejected(self) -> None:
        """Count a rejected arrival."""
        self._rejected.add(1, self._attributes)
