"""A Ray Tune + Optuna study of zero-shot cross-lingual transfer with the VME objective (Ding et al. 2022).

Packages, each importing only the ones listed before it: ``core`` (errors, protocol, languages, arms, metrics) ->
``vme`` (the objective in torch) and ``track`` (MLflow, no Ray) -> ``data`` -> ``models`` -> ``evaluation`` ->
``train`` (Ray Train) -> ``tune`` (Ray Tune) -> ``report`` -> ``cli`` (the ``study`` command)."""
