"""The report's view of the search: Optuna parameter importance over the finished search trials, with the inputs
fANOVA needs from each trial's parameters."""

from __future__ import annotations

from study.report.load import Study

MIN_IMPORTANCE_TRIALS = 20  # fANOVA's forest on fewer trials ranks parameters confidently even on pure noise


INACTIVE = "(inactive)"  # the value of a conditional parameter in a trial that did not take its branch


def importance_rows(study: Study) -> list[dict]:
    """Optuna's fANOVA importance of each searched parameter for English dev, per model, from at least
    ``MIN_IMPORTANCE_TRIALS`` finished search trials; parameters on their searched scale (``importance_inputs``),
    conditional ones included. Otherwise one row that says why there is no importance."""
    import optuna

    rows = []
    for model in study.models():
        trials = study.trials_of(model)
        name = next(t for t in study.trials if t.model == model).model_name
        space = _space(study, model)
        why = ("no search phase: the study has no tuned arm" if not trials else
               f"{len(trials)} finished search trials; fANOVA needs at least {MIN_IMPORTANCE_TRIALS}"
               if len(trials) < MIN_IMPORTANCE_TRIALS else
               "every trial has the same English dev score" if len({t.dev for t in trials}) < 2 else
               "the study did not record its search space (space.* parameters)" if not space else "")
        if why:
            rows.append({"model": name, "parameter": "all", "importance": None, "note": f"no importance: {why}"})
            continue
        values, distributions = importance_inputs(space, [t.params for t in trials])
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        search = optuna.create_study(direction="maximize")
        search.add_trials([optuna.trial.create_trial(params=v, distributions=distributions, value=t.dev)
                           for v, t in zip(values, trials, strict=True)])
        importances = optuna.importance.get_param_importances(
            search, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        rows += [{"model": name, "parameter": n, "importance": v, "note": "conditional" if space[n].when else ""}
                 for n, v in importances.items()]
    return rows


def _parent_params(study: Study, model: str) -> dict:
    """The MLflow parameters of the model's study (parent) run; {} when there is none."""
    return next((p.data.params for p in study.studies if p.data.tags.get("model") == model), {})


def _space(study: Study, model: str) -> dict:
    """The searched parameters (``search_space.Param``) the model's study recorded, by name ({} when none)."""
    from study.tune.search_space import SPACE_PARAM_PREFIX, Param

    return {k[len(SPACE_PARAM_PREFIX):]: Param.from_json(k[len(SPACE_PARAM_PREFIX):], v)
            for k, v in sorted(_parent_params(study, model).items()) if k.startswith(SPACE_PARAM_PREFIX)}


def importance_inputs(space: dict, trial_params: list[dict]) -> tuple[list[dict], dict]:
    """fANOVA inputs from trials' MLflow parameters (strings): (values per trial, distributions). Numbers go on the
    scale they were searched on (log10 of log-sampled ones: Optuna's fANOVA itself works on the raw values). A
    trial without a conditional parameter gets ``INACTIVE`` (categorical) or a value a tenth of the searched range
    below it (numeric), so the branch taken counts as part of the parameter's effect."""
    import math

    import optuna.distributions as D

    values: list[dict] = [{} for _ in trial_params]
    distributions = {}
    for name, param in space.items():
        missing = any(name not in p for p in trial_params)
        if param.type == "categorical":
            choices = [str(c) for c in param.choices] + ([INACTIVE] if missing else [])
            distributions[name] = D.CategoricalDistribution(choices)
            for out, params in zip(values, trial_params, strict=True):
                out[name] = params.get(name, INACTIVE)
            continue
        scale = math.log10 if param.log else float
        low, high = scale(param.low), scale(param.high)
        inactive = low - (high - low) / 10
        distributions[name] = D.FloatDistribution(inactive if missing else low, high)
        for out, params in zip(values, trial_params, strict=True):
            out[name] = scale(float(params[name])) if name in params else inactive
    return values, distributions
