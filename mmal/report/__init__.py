"""Reports of a comparison run: tables (CSV, Markdown) and PNG plots (``mmal report``)."""

from mmal.report.api import Report, make_report
from mmal.report.collect import RoundRecord, RunData, collect

__all__ = ["Report", "RoundRecord", "RunData", "collect", "make_report"]
