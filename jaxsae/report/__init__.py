"""The run's report: ``report.md`` with the tables beside the paper's published values, PNG plots
under ``plots/``, example steered generations and AutoInterp explanations.

    from jaxsae.report import write_report
    path = write_report(run_dir, results)   # results: the analysis stage's results.json

Modules, one concept each: ``fmt`` (numbers and table cells), ``artefacts`` (reading the per-SAE
files), ``labels`` (display names of axis groups), ``plots`` (the figures), ``markdown`` (the
sections) and ``write`` (putting them together). matplotlib is imported only when a report is
written.
"""

from .write import PLOT_FILES, write_report

__all__ = ["PLOT_FILES", "write_report"]
