"""The study report (``study report``): ``load`` reads MLflow into a ``Study``, ``tables`` computes the rows,
``figures`` draws the plots, ``page`` writes the CSVs, ``report.html`` and the ``report`` MLflow run."""
