"""The zoo's core: the model contract and what every other part builds on.

- :mod:`zoo.core.contract`: :class:`~zoo.core.contract.LatentSite`, :class:`~zoo.core.contract.ZooModel`, data checks;
- :mod:`zoo.core.plates`: the subsampled ``"data"`` plate;
- :mod:`zoo.core.params`: module-local parameters announced to Pyro;
- :mod:`zoo.core.weights`: per-datum importance weights from traces;
- :mod:`zoo.core.enumeration`: exact log p(x) for small discrete models;
- :mod:`zoo.core.distributions`: joint discrete distributions, fast Bernoulli, discrete KL;
- :mod:`zoo.core.nn`: network helpers;
- :mod:`zoo.core.errors`: the one user-error type.

Nothing here imports models, guides, objectives, training or evaluation.
"""
