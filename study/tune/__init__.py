"""The study on Ray Tune: a trial's config, the search space, the MLflow and console callbacks, the reference lines, the
settings and the driver of the search and confirm phases."""
