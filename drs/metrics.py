"""The state and its verdict for machines: Prometheus text format (GET /metrics).

Computed from the same state as every other surface, at each scrape: a rollback by hand
shows at the next scrape, not after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

from drs.runs import Outcome, Severity

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from drs.state import State, Verdict

PREFIX = "drs"


def _seconds(stamp: str | None) -> float | None:
    from drs.state import parse_stamp

    when = parse_stamp(stamp)
    return when.timestamp() if when else None


class _Collector:
    """Turns one state and its verdict into metric families (a custom collector)."""

    def __init__(self, state: State, verdict: Verdict) -> None:
        self.state = state
        self.verdict = verdict

    def collect(self) -> Iterator[Metric]:
        yield from self._verdict()
        yield from self._live_release()
        yield self._f1()
        yield self._drift()
        yield self._open_conditions()
        yield from self._last_run()
        if self.state.rows_ingested is not None:
            from prometheus_client.core import GaugeMetricFamily

            yield GaugeMetricFamily(
                f"{PREFIX}_rows_ingested",
                "Rows in the ingested dataset after the last ingestion (duplicates dropped).",
                value=float(self.state.rows_ingested),
            )

    def _verdict(self) -> Iterator[Metric]:
        """The severity as a number to alert on, and as one series a severity."""
        from prometheus_client.core import GaugeMetricFamily

        verdict = self.verdict
        yield GaugeMetricFamily(
            f"{PREFIX}_severity",
            "The verdict's severity: 0 ok, 1 notice, 2 warning, 3 critical.",
            value=verdict.severity.rank,
        )
        yield _one_hot(
            "verdict",
            "1 for the verdict's severity, 0 for the others.",
            "severity",
            Severity,
            verdict.severity,
        )

    def _live_release(self) -> Iterator[Metric]:
        """Which release is live, how it went live, and since when."""
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        live = self.state.live
        info = InfoMetricFamily(
            f"{PREFIX}_live_release",
            "The live release and how it went live.",
            labels=["release", "how"],
        )
        if live is not None:
            info.add_metric([live.release_id, live.how.value], {})
        yield info
        went = _seconds(live.went_live_at) if live else None
        if went is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_live_release_age_seconds",
                "Seconds since the live release went live.",
                value=max(self.state.now.timestamp() - went, 0.0),
            )

    def _f1(self) -> Metric:
        from prometheus_client.core import GaugeMetricFamily

        f1 = GaugeMetricFamily(
            f"{PREFIX}_f1",
            "F1 of the live model: on the test data, expected (cross-validated), on the new "
            "data's labelled rows, estimated without labels.",
            labels=["kind"],
        )
        for kind, value in self.state.figures.items():
            if value is not None:
                f1.add_metric([kind], value)
        return f1

    def _drift(self) -> Metric:
        from prometheus_client.core import GaugeMetricFamily

        check = self.state.last_check
        drift = GaugeMetricFamily(
            f"{PREFIX}_drift",
            "1 where the last check found drift: the model, or a feature.",
            labels=["check"],
        )
        if check is not None:
            drift.add_metric(["model"], float(check.drifted))
            features = (check.data_drift or {}).get("features") or {}
            for feature, found in features.items():
                drift.add_metric([f"feature:{feature}"], float(bool(found.get("drifted"))))
        return drift

    def _open_conditions(self) -> Metric:
        from prometheus_client.core import GaugeMetricFamily

        opened = GaugeMetricFamily(
            f"{PREFIX}_open_condition", "1 for each condition open now.", labels=["condition"]
        )
        for condition in self.state.conditions:
            opened.add_metric([condition.condition.value], 1.0)
        return opened

    def _last_run(self) -> Iterator[Metric]:
        """When the last recorded pipeline run finished, and its outcome."""
        from prometheus_client.core import GaugeMetricFamily

        run = self.state.last_run
        if run is None:
            return
        finished = _seconds(run.finished_at or run.started_at)
        if finished is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_last_run_timestamp_seconds",
                "When the last recorded pipeline run finished (or started, if it did not).",
                value=finished,
            )
        yield _one_hot(
            "last_run_outcome",
            "1 for the last recorded pipeline run's outcome.",
            "outcome",
            Outcome,
            run.outcome,
        )


def _one_hot(
    name: str, documentation: str, label: str, members: Iterable[StrEnum], chosen: object
) -> Metric:
    """A gauge with one series an enum member: 1 for the chosen one, 0 for the others."""
    from prometheus_client.core import GaugeMetricFamily

    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
    for member in members:
        family.add_metric([member.value], float(member == chosen))
    return family


def exposition(state: State, verdict: Verdict) -> tuple[bytes, str]:
    """The metrics as Prometheus text, and the content type to serve them with."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(state, verdict))
    return generate_latest(registry), CONTENT_TYPE_LATEST
