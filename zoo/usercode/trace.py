"""The trial run's trace, read against the contract of :mod:`zoo.core.contract`.

The zoo runs a user's model (and guide) once on a minibatch of :data:`TRIAL_B` rows out of
:data:`TRIAL_N`, sizes unlikely to coincide with a latent's own dimensions, and reads off its
trace what the guides and the harness need: each latent site (:func:`read_latents`), each
observed site and the columns of x it holds (:func:`read_observations`), and which latents each
observation depends on (:func:`observed_parents`). Each departure from the contract is refused in
one line that says what to write instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch.distributions import constraints

from zoo.core.contract import LatentSite
from zoo.core.errors import ZooError
from zoo.core.weights import is_deterministic, is_factor, is_subsample_site
from zoo.usercode.supports import base_support, has_bijection, is_discrete, support_name

__all__ = ["TRIAL_B", "TRIAL_N", "TRIAL_PARTICLES", "TRIAL_SEEDS", "trial_rows", "site_signature",
           "check_fixed_sites", "check_subsample", "read_latents", "read_observations", "observed_parents",
           "ObservedSite", "support_kind", "columns_of", "column_ranges", "plate_violation", "latent_site", "global_site"]

#: The trial run's minibatch: B rows out of N.
TRIAL_B, TRIAL_N = 3, 7
#: The vectorized trial run's particles per datum (a "particles" plate left of the data plate).
TRIAL_PARTICLES = 2


#: The further trial runs, one per seed 0..TRIAL_SEEDS-1, that check that a model samples the same sites every run.
TRIAL_SEEDS = 8


def trial_rows(example: Optional[torch.Tensor], x_dim: int, device=None) -> torch.Tensor:
    """The trial minibatch ``[TRIAL_B, x_dim]``: the first rows of ``example`` (the data, repeated if it has
    fewer), or zeros without it. Data, where there are any: a model may read a column as a scale (eight
    schools' per-datum sigma), which zeros would make an invalid distribution."""
    if example is None:
        return torch.zeros(TRIAL_B, x_dim, device=device)
    x = example[:TRIAL_B]
    while x.shape[0] < TRIAL_B:
        x = torch.cat([x, x])[:TRIAL_B]
    return x.to(device if device is not None else x.device).contiguous()


def site_signature(trace) -> Tuple[Tuple[str, Tuple[int, ...]], ...]:
    """The name and event shape of every sample site of a trial trace, in order (the data plate's subsample
    site and ``pyro.deterministic`` sites aside): what a guide is built for."""
    return tuple((n, tuple(int(d) for d in s["fn"].event_shape)) for n, s in trace.nodes.items()
                 if s["type"] == "sample" and not is_subsample_site(s) and not is_deterministic(s))


def check_fixed_sites(signatures: Sequence[Tuple[Tuple[str, Tuple[int, ...]], ...]], name: str) -> None:
    """Refuse a model whose trial runs (each one's :func:`site_signature`: the first at the caller's random state,
    the others at seeds 0, 1, ...) sampled different sites, or the same site with different event shapes: its set of latents depends on sampled values (an
    AIR-style loop, ``for i in range(int(steps.max()))``), and a guide, built for the sites of one run,
    would miss or invent sites in the next (Pyro's ``KeyError`` mid-training, or a silently wrong bound)."""
    runs = [dict(s) for s in signatures]
    if all(r == runs[0] for r in runs):
        return
    if any(r != runs[1] for r in runs[2:]):     # the seeded runs differ among themselves: named by them alone,
        runs = runs[1:]                          # so that the message does not depend on the caller's seed
    everywhere = set.intersection(*(set(r) for r in runs))
    varying = sorted(set.union(*(set(r) for r in runs)) - everywhere, key=lambda n: (len(n), n))
    if varying:
        what = f"site(s) {', '.join(repr(n) for n in varying[:4])} in some trial runs and not in others"
    else:
        site = next(n for n in runs[0] if any(r[n] != runs[0][n] for r in runs))
        shapes = sorted({r[site] for r in runs})
        what = f"site {site!r} with event shape {shapes[0]} in one trial run and {shapes[1]} in another"
    raise ZooError(f"{name} samples {what} (trial runs at different seeds): its sites depend on sampled values, "
                   f"and a guide needs the same sites on every run; loop over a fixed maximum number of steps and "
                   f"mask the steps not taken, e.g. pyro.sample(f'z_{{i}}', d.mask(i < steps)) for i in "
                   f"range(MAX_STEPS)")


def check_subsample(traces: Sequence, idx: torch.Tensor, name: str) -> None:
    """Refuse a data plate that draws its own rows (``pyro.plate("data", N, subsample_size=B)`` subsamples at
    random) instead of the minibatch's ``idx``: the trial runs' plates must hold ``idx`` itself, so that a
    per-datum guide's row and the datum's row of x agree."""
    for trace in traces:
        plate = trace.nodes.get("data")
        if plate is None or not is_subsample_site(plate):
            continue
        rows = plate["value"].to(idx.device)
        if rows.shape == idx.shape and not torch.equal(rows, idx):      # a plate of another size: not subsampled
            raise ZooError(f"{name}'s data plate draws its own rows (subsample_size subsamples at random), not the "
                           f"minibatch's idx the zoo passes: open it as pyro.plate('data', N, subsample=idx)")


def read_latents(trace, name: str) -> list:
    """The latent sites of a trial trace of the model ``name``, checked against the contract."""
    latents, observed = [], []
    sites = [(n, s) for n, s in trace.nodes.items() if s["type"] == "sample" and not is_subsample_site(s)
             and not is_deterministic(s)]                 # pyro.deterministic: bookkeeping, no density
    if not any(f.name == "data" for _, s in sites for f in s["cond_indep_stack"]):
        raise ZooError(f"{name} has no data plate; put every latent and the observation 'x' inside "
                       f"pyro.plate('data', N, subsample=idx)")
    for site_name, site in sites:
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        data = [f for f in frames if f.name == "data"]
        if site["is_observed"]:
            if not is_factor(site):
                observed.append(site_name)
            if not data:
                what = "pyro.factor term" if is_factor(site) else "observed site"
                raise ZooError(f"{name}'s {what} {site_name!r} is outside the data plate; the zoo scores per-datum "
                               f"terms: put it inside pyro.plate('data', N, subsample=idx) so minibatches are "
                               f"scaled by N/B")
        elif not data:
            latents.append(global_site(site_name, site, name))
            continue
        _check_plates(site_name, frames, name)
        _check_batch_shape(site_name, site)
        if not site["is_observed"]:
            latents.append(latent_site(site_name, site["fn"]))
    if not observed:
        raise ZooError(f"{name} observes nothing; add pyro.sample('x', ..., obs=x) inside "
                       f"pyro.plate('data', N, subsample=idx)")
    scale = trace.nodes[observed[0]]["scale"]
    if not torch.is_tensor(scale) and abs(float(scale) - TRIAL_N / TRIAL_B) > 1e-6:
        plate = next(f for f in trace.nodes[observed[0]]["cond_indep_stack"] if f.name == "data")
        if plate.full_size == TRIAL_N and plate.size == TRIAL_B:    # the plate is right: something else scales
            raise ZooError(f"{name}'s observed site {observed[0]!r} is scaled by {float(scale):.3g}, not the data "
                           f"plate's N/B = {TRIAL_N}/{TRIAL_B}: something besides the plate scales it (a "
                           f"poutine.scale); the zoo weighs each term itself and scales a minibatch by N/B through "
                           f"pyro.plate('data', N, subsample=idx) alone: drop the extra scale")
        raise ZooError(f"{name}'s data plate is not subsampled: a minibatch of {TRIAL_B} out of N={TRIAL_N} "
                       f"was scaled by {float(scale):.3g}, not N/B; open it as pyro.plate('data', N, subsample=idx)")
    if not latents:
        raise ZooError(f"{name} has no latent sample site; the zoo fits guides to latents: add one inside "
                       f"pyro.plate('data', N, subsample=idx), e.g. pyro.sample('z', dist.Normal(...).to_event(1))")
    return latents


def observed_parents(trace, deps, latents: Sequence[str]) -> Tuple[Tuple[str, ...], ...]:
    """For each observed site of the trial trace (the observation, ``pyro.factor`` terms), the latents whose
    values its log-density depends on directly: ``pyro.infer.inspect.get_dependencies``'s prior dependencies,
    which track each value's provenance through the model's computation."""
    observed = [n for n, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]
                and not is_subsample_site(s) and not is_deterministic(s)]
    return tuple(tuple(p for p in latents if p in deps.get(n, {})) for n in observed)


@dataclass(frozen=True)
class ObservedSite:
    """One observed site of a user's model and the columns of x it holds.

    Arguments:
        name: the Pyro sample-site name (``"x"``, ``"obs_x_1"``, ``"y"``).
        columns: the columns of x its value holds, in the order of its flattened event
            (``x[:, 8:16]`` holds 8..15, ``x[:, -1]`` holds D - 1).
        event_shape: the shape of one datum's value.
        likelihood: the kind of value its support holds, which decides which data are valid
            (:func:`zoo.rules.check_data_kind`): ``"bernoulli"`` (boolean: 0/1), ``"counts"``
            (non-negative integers: a Poisson, a negative binomial), ``"levels"`` (the integers
            0..levels-1: a Categorical, a binomial) or ``"gaussian"`` (any finite value).
        distribution: the distribution's class name (``"Poisson"``), for messages.
        levels: for ``"levels"``, how many.
    """

    name: str
    columns: Tuple[int, ...]
    event_shape: Tuple[int, ...]
    likelihood: str
    distribution: str = ""
    levels: Optional[int] = None


def read_observations(trace, x: torch.Tensor, name: str):
    """The observed sites of a trial trace with the columns of ``x`` each holds, and the pyro.factor sites.

    Which columns a site holds is read off its value: an observation ``obs=x[:, 8:16]`` (or
    ``x[:, 0]``, ``x[:, :-1]``, ``x.view(B, T, d)[:, t]``) is a *view* of x, sharing its storage,
    so its storage offset and strides say which element of x each of its elements is
    (:func:`columns_of`). A value that is not a view of x (a copy, ``x * 2``) cannot be placed
    and is refused, except a site ``"x"`` with event shape ``(D,)``, which holds all of x.
    Columns no site holds are covariates (read by the model, not observed).
    """
    D = x.shape[1]
    observed, factors, owner = [], [], {}
    for site_name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or is_deterministic(site) or is_subsample_site(site):
            continue
        if is_factor(site):
            factors.append(site_name)
            continue
        event = tuple(int(n) for n in site["fn"].event_shape)
        columns = columns_of(site["value"], x)
        if columns is None and site_name == "x" and event == (D,):
            columns = tuple(range(D))
        if columns is None:
            raise ZooError(f"{name}'s observed site {site_name!r} holds a value that is not a slice of x, so the zoo "
                           f"cannot tell which columns of x it scores; observe slices of x as they are, "
                           f"obs=x[:, a:b] or obs=x[:, j] (no copy, no arithmetic)")
        for c in columns:
            if c in owner:
                raise ZooError(f"{name} observes column {c} of x twice (sites {owner[c]!r} and {site_name!r}); "
                               f"each column may be observed by one site only")
            owner[c] = site_name
        likelihood, levels = support_kind(site["fn"])
        observed.append(ObservedSite(site_name, columns, event, likelihood, _distribution_name(site["fn"]), levels))
    return tuple(observed), tuple(factors)


def support_kind(fn) -> Tuple[str, Optional[int]]:
    """(likelihood kind, levels) of an observed site's distribution, read off its support (see :class:`ObservedSite`)."""
    try:
        support = base_support(fn.support)
    except NotImplementedError:
        return "gaussian", None
    if support is constraints.boolean:
        return "bernoulli", None
    if support is constraints.nonnegative_integer:
        return "counts", None
    if isinstance(support, constraints.integer_interval):
        lower, upper = _one_value(support.lower_bound), _one_value(support.upper_bound)
        if lower is None or upper is None:
            return "counts", None           # a bound per datum (a binomial's total_count): at least counts
        if lower == 0 and float(upper).is_integer():
            return "levels", int(upper) + 1
        return "counts", None
    return "gaussian", None


def _one_value(bound) -> Optional[float]:
    """A support's bound as one number; ``None`` when it differs between elements."""
    if not torch.is_tensor(bound):
        return float(bound)
    flat = bound.reshape(-1)
    if flat.numel() == 0 or not bool((flat == flat[0]).all()):
        return None
    return float(flat[0])


def _distribution_name(fn) -> str:
    """The class name of the distribution inside ``.to_event`` and masking wrappers (``Poisson``)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


def columns_of(value, x: torch.Tensor) -> Optional[Tuple[int, ...]]:
    """The columns of ``x`` ``[B, D]`` that ``value`` ``[B, *event]`` holds, if it is a view of x taking the
    same columns from every row (``None`` otherwise).

    Element i of a view sits at ``storage_offset + sum_k i_k stride_k`` of x's storage, so applying
    the view's geometry to ``arange(B * D)`` (x's element numbers) gives each element's row and column.

    Example::

        >>> x = torch.zeros(3, 5)
        >>> columns_of(x[:, 1:3], x), columns_of(x[:, -1], x), columns_of(x * 2, x)
        ((1, 2), (4,), None)
    """
    if not torch.is_tensor(value) or value.dim() < 1 or value.shape[0] != x.shape[0] or not x.is_contiguous():
        return None
    if value.device != x.device or value.untyped_storage().data_ptr() != x.untyped_storage().data_ptr():
        return None
    B, D = x.shape
    try:
        positions = torch.arange(B * D).as_strided(tuple(value.shape), tuple(value.stride()),
                                                   value.storage_offset() - x.storage_offset())
    except RuntimeError:                                  # outside x: some other tensor in the same storage
        return None
    positions = positions.reshape(B, -1)
    rows, columns = positions // D, positions % D
    if not (rows == torch.arange(B).unsqueeze(1)).all() or not (columns == columns[0]).all():
        return None
    return tuple(int(c) for c in columns[0])


def column_ranges(columns) -> str:
    """``0-6, 9``: a sorted list of column numbers as runs."""
    runs, columns = [], sorted(columns)
    for c in columns:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def plate_violation(frames) -> Optional[Tuple[str, object]]:
    """The first way the vectorized plates ``frames`` of a local site on the trial minibatch break the
    contract (a model's latent or observation, a guide's proposal): ``("plate", f)``, a plate other than
    ``"data"`` (per-datum dimensions are an event); ``("size", f)``, a data plate that is not the minibatch
    of :data:`TRIAL_B` (not subsampled); ``("dim", f)``, a data plate not at dim -1. ``None`` if none does."""
    for f in frames:
        if f.name != "data":
            return "plate", f
        if f.size != TRIAL_B:
            return "size", f
        if f.dim != -1:
            return "dim", f
    return None


def _check_plates(site_name: str, frames, name: str) -> None:
    broken = plate_violation(frames)
    if broken is None:
        return
    rule, f = broken
    misplaced = [d for d in frames if d.name == "data" and d.dim != -1]
    if rule == "plate" and misplaced:      # Pyro's idiom: a plate of features at -1, the data's at -2
        raise ZooError(f"site {site_name!r} of {name} is inside plate {f.name!r} (dim {f.dim}) and the data plate "
                       f"is at dim {misplaced[0].dim}; the zoo's models have the 'data' plate only, at dim -1: drop "
                       f"plate {f.name!r} and the dim argument of pyro.plate('data', ...), and declare the per-datum "
                       f"dimensions an event with .to_event(1)")
    if rule == "size":
        raise ZooError(f"{name}'s data plate is not subsampled: a minibatch of {TRIAL_B} out of N={TRIAL_N} "
                       f"gave a plate of {f.size}; open it as pyro.plate('data', N, subsample=idx)")
    if rule == "dim":
        raise ZooError(f"{name}'s data plate is at dim {f.dim}; the zoo puts it at dim -1 (its particle "
                       f"plates go to the left): drop the dim argument of pyro.plate('data', ...)")
    raise ZooError(f"site {site_name!r} of {name} is inside plate {f.name!r}; the zoo's models have the "
                   f"'data' plate only: declare the per-datum dimensions an event with .to_event(1)")


def _check_batch_shape(site_name: str, site) -> None:
    batch = tuple(site["fn"].batch_shape)
    if batch != (TRIAL_B,):
        raise ZooError(f"site {site_name!r} has batch shape {batch} for a minibatch of {TRIAL_B}; a datum's "
                       f"value must be one event: add .to_event(1) (or .to_event(n) for n per-datum dimensions)")


def latent_site(site_name: str, fn) -> LatentSite:
    """Name, event shape, zoo support and value form of one latent, from its distribution's ``support``.

    Pyro's usual one-variable discrete sites are taken as written (their :attr:`LatentSite.form`):
    ``Bernoulli(p)`` (event ``()``), ``OneHotCategorical(p)`` (event ``(K,)``) and ``Categorical(p)``
    (event ``()``, integer values); so are the zoo's vector forms ``Bernoulli(...).to_event(1)``
    (event ``(K,)``) and ``OneHotCategorical(...).to_event(1)`` (event ``(n, K)``).
    """
    event = tuple(int(s) for s in fn.event_shape)
    support = base_support(fn.support)
    if support is constraints.real:
        return LatentSite(site_name, event, "real")
    if support is constraints.boolean:
        if len(event) > 1:
            raise ZooError(f"binary latent {site_name!r} has event shape {event}; the zoo's binary latents are "
                           f"one bit, Bernoulli(logits) with event shape (), or vectors of K bits, "
                           f"Bernoulli(logits).to_event(1) with logits of shape (K,)")
        return LatentSite(site_name, event, "binary", form="bit" if not event else "block")
    if support is constraints.one_hot:
        if len(event) not in (1, 2):
            raise ZooError(f"categorical latent {site_name!r} has event shape {event}; the zoo's categorical latents "
                           f"are one one-hot vector, OneHotCategorical(logits) with logits of shape (K,), or blocks "
                           f"of n, OneHotCategorical(logits).to_event(1) with logits of shape (n, K)")
        return LatentSite(site_name, event, "categorical", num_classes=event[-1],
                          form="one_hot" if len(event) == 1 else "block")
    if isinstance(support, constraints.integer_interval) and support.lower_bound == 0 and not event:
        return LatentSite(site_name, (), "categorical", num_classes=int(support.upper_bound) + 1, form="index")
    if has_bijection(support) and not is_discrete(support):    # Gamma, LogNormal, Dirichlet, Beta...
        return LatentSite(site_name, event, "real", constraint=support)
    hint = (" give one Categorical per site (event shape ()), or OneHotCategorical(logits).to_event(1) with "
            "logits of shape (n, K) for n of them" if isinstance(support, constraints.integer_interval)
            else " reparameterize it, e.g. sample its log from a Normal")
    raise ZooError(f"latent {site_name!r} has support {support_name(fn.support)}, which the zoo's guides do not "
                   f"cover (real, binary, categorical):{hint}")


def global_site(site_name: str, site, name: str) -> LatentSite:
    """A latent outside the data plate: one global site whose event shape is its whole value's shape
    (the dimensions of its own plates included, e.g. ``(K, D)`` for mixture locations in a plate of K).

    Its support must be continuous (real, or a constraint with a bijection to the reals, as
    ``biject_to`` gives for positive, simplex, interval...): the global guide is a Normal, or a point
    mass, on the unconstrained space. A discrete global (one value for the whole data set) has no
    such guide; the zoo refuses it."""
    fn = site["fn"]
    shape = tuple(int(s) for s in fn.batch_shape + fn.event_shape)
    plates = tuple((f.name, int(f.size), int(f.dim)) for f in site["cond_indep_stack"] if f.vectorized)
    support = base_support(fn.support)
    if is_discrete(support):
        raise ZooError(f"{name}'s latent {site_name!r} is outside the data plate (a global latent) with discrete "
                       f"support {support_name(fn.support)}; the zoo's global guides are continuous (Normal or "
                       f"MAP): move it inside pyro.plate('data', N, subsample=idx), or make it a pyro.param")
    if not has_bijection(support):
        raise ZooError(f"{name}'s global latent {site_name!r} has support {support_name(fn.support)}, which has "
                       f"no bijection to the reals (torch's biject_to); reparameterize it, e.g. sample its log "
                       f"from a Normal")
    return LatentSite(site_name, shape, "real", scope="global",
                      constraint=constraints.real if support is constraints.real else support,
                      plates=plates, event_dim=len(fn.event_shape))
