"""The anomaly report: one HTML page and the PNG figures operators look at.

``turbine report --store DIR [--input FILE] --output DIR`` writes
``index.html`` and, drawn with matplotlib's Agg canvas (headless, no pyplot
state):

``timeline.png``
    For the turbines with the most anomalies, the squared distance against
    the threshold over time, anomalies marked and labelled faults shaded.
    With ``--input`` the file is re-scored with the configuration and batch
    size recorded in the store's manifest, so every reading's distance is
    drawn; without it, the stored anomalies only.
``heatmap.png``
    Anomaly counts per turbine and time bucket, accumulated chunk by chunk.
``contributions.png``
    Each sensor's contribution to the worst events (one per turbine), and
    for each the most similar earlier anomalies (:mod:`pipeline.similarity`).
``correlation.png``
    The correlation matrix of each key group's fleet model, from the
    embedded run's ``model.npz`` or the Kafka detector's merged checkpoints.

Labelled inputs add the evaluation table (precision, recall, F1, FAR, MAR,
as ``turbine evaluate``).  The store is read one CSR chunk at a time,
whatever its size: a pass for the counts, the heatmap and the worst events,
one for the similar anomalies, and (without ``--input``) one for the worst
turbines' anomalies.
"""

from pipeline.report.common import FIGURES, ReportOptions
from pipeline.report.page import Report, write_report

__all__ = ["FIGURES", "Report", "ReportOptions", "write_report"]
