"""Your own Pyro model as a zoo model: :func:`from_pyro`.

An ordinary Pyro model joins the zoo if it keeps the contract of :mod:`zoo.core.contract`::

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)                    # or pyro.param("w", init)
        with pyro.plate("data", N, subsample=idx):         # every latent and "x" in here
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

:func:`from_pyro` runs it once on a small batch under ``poutine.trace`` and reads off what the
guides need (every latent site's name, event shape, support and parents, in model order, and the
latents each observed site depends on directly, which structured guides moralize), the
likelihood (Bernoulli if ``"x"`` has boolean support, else Gaussian: it only decides which data
are valid) and the parameters, and returns a :class:`PyroModel`, a
:class:`~zoo.core.contract.ZooModel` that every guide, objective, the harness, ``gradients`` and
``compare`` take. Models with only small discrete latents get the exact log p(x) by enumeration,
as the built-in ones do.

**The call.** The zoo calls ``model(x, idx=idx, N=N)``: ``x`` is a minibatch ``[B, D]``, ``idx``
its row numbers in the data set (a LongTensor) and ``N`` the data set's size, so
``pyro.plate("data", N, subsample=idx)`` scales the minibatch by N / B. ``N`` is always an
integer; with data and no indices ``idx`` is ``arange(B)`` and ``N`` is ``B``. To draw new data
the zoo calls ``model(None, idx=None, N=n)``: there is no x then, so the model sizes its tensors
from the plate (``with pyro.plate("data", N, subsample=idx) as batch:`` and ``len(batch)``) or
``N``, never from x (a tutorial's ``x.new_zeros((x.size(0), z_dim))`` fails), and samples each
observed site (``obs=None``). The objectives and the harness run the model under a ``"particles"``
plate left of the data plate, so a latent's value is ``[K, B, *event]``: shapes are read from the
right (``z.shape[:-1]``, ``loc.view(*z.shape[:-1], D)``), never ``z.shape[0]``. A second trial run
with two particles refuses shapes written for one, naming the model file's line.

**Observations.** Any number of observed sites, with any names, inside the data plate, each
reading a slice of x as it is: ``obs=x``, a sequence model's step ``obs=x[:, t*d:(t+1)*d]``,
``obs=x[:, -1]`` (event shape ``()``). The trial run reads which columns of x each holds
(:class:`~zoo.usercode.trace.ObservedSite`), and :meth:`PyroModel.sample` puts each site's draw into its columns.
Columns no site observes are *covariates* (a regression's features ``x[:, :-1]``): log p(x) is
then log p(observed columns | covariates), the run's note says so, and ``sample`` is refused.
``pyro.factor`` terms inside the plate count in log p(x | z); ``pyro.deterministic`` sites are
ignored. Each observed column's likelihood, read off its site's support (Bernoulli: 0/1; Poisson and
other counts: non-negative integers; Categorical over k levels: 0..k-1; otherwise Gaussian), decides
which data are valid (:func:`zoo.rules.check_data_kind`).

**Named covariates.** A model may take its per-datum inputs apart from x, as a keyword:
``model(x, covariates=None, idx=None, N=None)``. With ``from_pyro(..., covariate_dim=C)`` (on the
command line, ``--covariates NAMES`` naming columns of a CSV or arrays of an ``.npz``) the last C
columns of each data row are passed as ``covariates`` (``[B, C]``) and the others as ``x``; a
factory gets ``x_dim - C`` and, if it declares it, ``covariate_dim=C``. The covariates are read, not
observed, so log p(x) is log p(x | covariates) and ``sample`` is refused, as above. A model that
declares ``covariates`` given none, or given some without declaring it, is refused in one line.

**What it assumes** (each checked on the trial run, each refused in one line that says what to
do instead): every local latent is inside the ``"data"`` plate at dim -1 and in no other plate;
a latent outside the data plate is *global* (``model.global_latents``: its whole shape, its own
plates included, is one site, guided by :mod:`guides.globals`) and must be continuous; a local
latent's support is real (``Normal``, ``MultivariateNormal``, or constrained with a ``biject_to``:
``Gamma``, ``LogNormal``, ``Dirichlet``...), binary (``Bernoulli(p)``, one bit, or
``Bernoulli(...).to_event(1)``, event shape ``(K,)``) or categorical (``Categorical(p)``, an integer
0..K-1; ``OneHotCategorical(p)``, event shape ``(K,)``; or ``OneHotCategorical(...).to_event(1)``,
event shape ``(n, K)``), each site written as Pyro's examples write it: every guide then samples
values of the very form the site declares; every observed site holds a slice of x, each column at
most once.

**Parameters become the zoo model's own**, so ``model.parameters()``, ``state_dict``,
checkpoints, the optimizer and ``.to(device)`` see them, and nothing goes through Pyro's global
param store (where the first tensor stored under a name wins, so a second model built from the
same code would silently share the first one's values):

- ``nn.Module`` objects the model function names (a closure variable or a module-level global),
  or the object itself when it is an ``nn.Module`` (a ``PyroModule`` too) with a ``model`` method
  or, failing that, a ``forward(x, idx=None, N=None)`` that is the model, become sub-modules
  (parameters, buffers and train/eval mode follow the zoo model). A ``pyro.module`` call on a
  module found neither way still works: its parameters are adopted by identity.
- ``pyro.param("w", init, constraint=...)`` sites become ``nn.Parameter`` values holding the
  *unconstrained* value; each call returns ``transform_to(constraint)`` of it, as Pyro does.
  The initial value is the one the model passes; the global param store is never read or written.

**Devices.** ``model.to("cuda")`` moves the networks and parameters; tensors the model function
creates itself (``torch.zeros(2)``) are created on the model's device during the call.

**Fresh networks per zoo model.** Parameters belong to one zoo model; building a second zoo model
from the same module objects is refused. Give a *factory* instead, a callable whose first argument
is ``x_dim`` (a function returning the model function, or an ``nn.Module`` class): each
:func:`from_pyro` call then builds its own networks, sized from the data. A class whose
``__init__`` does not take ``x_dim`` first is refused (pass an instance instead). Model files given to
the CLI (``pyro-zoo train my_models.py:my_vae``) are imported afresh for every zoo model, so
module-level networks there are not shared either.

Example::

    >>> import pyro, pyro.distributions as dist, torch
    >>> def ppca(x_dim):
    ...     W = torch.nn.Linear(2, x_dim)
    ...     def model(x, idx=None, N=None):
    ...         with pyro.plate("data", N, subsample=idx):
    ...             z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    ...             pyro.sample("x", dist.Normal(W(z), 0.5).to_event(1), obs=x)
    ...     return model
    >>> m = from_pyro(ppca, x_dim=5)
    >>> m.latents, m.likelihood, sorted(m.state_dict())
    ((LatentSite(name='z', event_shape=(2,), support='real', num_classes=None, parents=(), form='block'),), 'gaussian', ['networks.W.bias', 'networks.W.weight'])

A user-written model, three guides compared (the README's example)::

    import pyro, pyro.distributions as dist, torch, zoo
    from torch import nn

    def my_vae(x_dim, z_dim=4):                  # a factory: fresh networks for every zoo model
        decoder = nn.Sequential(nn.Linear(z_dim, 64), nn.Tanh(), nn.Linear(64, x_dim))
        def model(x, idx=None, N=None):
            pyro.module("decoder", decoder)
            with pyro.plate("data", N, subsample=idx):
                z = pyro.sample("z", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
        return model

    data = zoo.load_dataset("digits")
    for name in ("meanfield", "amortized", "iaf"):
        model = zoo.from_pyro(my_vae, data.x_dim)
        guide = zoo.build_guide(name, model, num_data=len(data.train))
        zoo.fit(model, guide, zoo.build_objective("elbo"), data.train, epochs=10, batch_size=100, lr=3e-3,
                progress=False)
        result = zoo.evaluate(model, guide, data.train, num_samples=100)
        print(f"{name:10} ELBO {result['elbo']:.2f}  log p(x) {result['log_likelihood']:.2f}")

(Evaluated on the training data, to which the per-datum ``meanfield`` guide was fitted; the CLI's
``pyro-zoo compare my_vae.py:my_vae --guides meanfield,amortized,iaf`` refits it to the test split.)
"""
from __future__ import annotations

import inspect
import warnings
from typing import Callable, Optional, Tuple

import pyro.poutine as poutine
import torch
from pyro.infer.inspect import get_dependencies
from torch import nn

from zoo.core.contract import LatentSite, ZooModel, check_data
from zoo.core.errors import ZooError
from zoo.core.weights import vectorize
from zoo.usercode.errors import call_user
from zoo.usercode.functions import first_parameter, named_modules
from zoo.usercode.messengers import ObservationColumns, call_owned
from zoo.usercode.params import UserParameters, claim_parameters
from zoo.usercode.trace import (TRIAL_B, TRIAL_N, TRIAL_PARTICLES, TRIAL_SEEDS, ObservedSite, check_fixed_sites,
                                check_subsample, column_ranges, observed_parents, read_latents, read_observations, site_signature,
                                trial_rows)

__all__ = ["from_pyro", "PyroModel"]

_PARTICLES_WHAT = f"under {TRIAL_PARTICLES} vectorized particles per datum (as iwae, --particles and the evaluation run it)"


def from_pyro(model, x_dim: Optional[int] = None, *, data: Optional[torch.Tensor] = None,
              name: Optional[str] = None, covariate_dim: int = 0) -> "PyroModel":
    """Wrap an ordinary Pyro model (see the module docstring for the contract it must keep).

    Arguments:
        model: a Pyro model function ``model(x, idx=None, N=None)``; an ``nn.Module`` with such a
            ``model`` method, or whose ``forward`` is one (a ``PyroModule``); or a factory whose first
            argument is ``x_dim`` and that returns one of these (a function, or an ``nn.Module`` class).
            The zoo calls it as ``model(x, idx=idx, N=N)`` to score and ``model(None, idx=None, N=n)``
            to generate (see the module docstring).
        x_dim: D, the number of features of one datum.
        data: example data ``[n, D]`` (instead of, or besides, ``x_dim``); its first rows feed the
            trial run, which otherwise uses zeros.
        name: the model's name in messages and tables (default: the function's name).
        covariate_dim: C, how many of the last columns of a data row are covariates (per-datum inputs,
            ``--covariates``); the model then takes them apart, ``model(x, covariates=c, idx=idx, N=N)``
            with ``x`` the first ``x_dim - C`` columns, and a factory gets ``x_dim - C`` (and
            ``covariate_dim=C`` if it takes that argument).
    """
    if data is not None:
        if not torch.is_tensor(data) or data.dim() != 2:
            raise ZooError("from_pyro's data must be a 2-D tensor [num_data, num_features]")
        if x_dim is not None and data.shape[1] != x_dim:
            raise ZooError(f"from_pyro got x_dim={x_dim} but data with {data.shape[1]} features")
        x_dim = data.shape[1]
    if x_dim is None:
        raise ZooError("from_pyro needs the data dimension: from_pyro(model, x_dim) or from_pyro(model, data=x)")
    name = name or getattr(model, "__name__", None) or type(model).__name__
    if not 0 <= covariate_dim < x_dim:
        raise ZooError(f"from_pyro got covariate_dim={covariate_dim} for rows of {x_dim} columns; leave at least one "
                       f"column of data")
    if first_parameter(model) == "x_dim":                  # a factory (a class: its __init__)
        if not covariate_dim and _requires(model, "covariate_dim"):
            raise ZooError(f"{name} takes covariate_dim, and the data have no covariates: name them with --covariates "
                           f"NAMES (columns of a .csv, arrays of an .npz), or pass covariate_dim to from_pyro")
        extra = {"covariate_dim": covariate_dim} if covariate_dim and _takes_named(model, "covariate_dim") else {}
        model = model(int(x_dim) - covariate_dim, **extra)
        if not callable(model):
            raise ZooError(f"{name}(x_dim) is a factory (its first argument is x_dim) and returned "
                           f"{'None' if model is None else 'a ' + type(model).__name__}, not a model; end it with "
                           f"'return model', the model function (or nn.Module) it builds")
    elif inspect.isclass(model):
        raise ZooError(f"{name} is a class whose __init__ does not take x_dim first, so the zoo cannot build it; "
                       f"pass an instance, from_pyro({name}(...), x_dim), or make x_dim its first argument, "
                       f"def __init__(self, x_dim, ...)")
    return PyroModel(model, int(x_dim), name=name, example=data, covariate_dim=covariate_dim)


def _requires(fn, argument: str) -> bool:
    """Whether ``fn`` declares the parameter ``argument`` without a default."""
    try:
        parameter = inspect.signature(fn).parameters.get(argument)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _takes_named(fn, argument: str) -> bool:
    """Whether ``fn`` (for an ``nn.Module``: its ``forward``) declares the parameter ``argument`` by name."""
    target = fn.forward if isinstance(fn, nn.Module) else fn
    try:
        return argument in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


class PyroModel(ZooModel, UserParameters):
    """A user's Pyro model under the zoo contract; made by :func:`from_pyro`.

    Attributes:
        networks: the ``nn.Module`` objects the model function names (closure or globals).
        user: the user's ``nn.Module`` when the model is its ``model`` method.
        params: ``pyro.param`` values (unconstrained) and adopted ``pyro.module`` parameters.
    """

    def __init__(self, fn, x_dim: int, name: str = "model", example: Optional[torch.Tensor] = None,
                 covariate_dim: int = 0):
        super().__init__(x_dim)
        self._name = name
        #: how many of the last columns of x are covariates, given to the user's function as ``covariates=``
        self.covariate_dim = int(covariate_dim)
        owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module):
            self.user = owner
            # the entry point may be the module itself (its forward): kept out of nn.Module's registry, as `user` holds it
            object.__setattr__(self, "_fn", _module_entry_point(owner, fn, name))
        elif callable(fn):
            self._fn = fn
            found = named_modules(fn)
            if found:
                self.networks = nn.ModuleDict(found)
        else:
            raise ZooError(f"from_pyro needs a Pyro model function or factory, got {type(fn).__name__}")
        self._check_covariates_taken()
        self.init_parameter_sites()
        #: the observed sites and the columns of x each holds; columns no site observes are covariates
        self.observed: Tuple[ObservedSite, ...] = ()
        self.covariates: Tuple[int, ...] = ()
        #: the pyro.factor sites in the data plate, counted in log p(x | z)
        self.factors: Tuple[str, ...] = ()
        self._latents, self.likelihood = self._inspect(example)
        self._claim_parameters()

    def __deepcopy__(self, memo):
        # A copy's networks would be copies, but the user's function would still call the originals
        # (they live in its closure), so the copy would silently train and score someone else's weights.
        raise ZooError(f"{self._name} wraps a Pyro function that holds its own networks, so it cannot be "
                       f"deep-copied; build another with from_pyro(factory, x_dim) and load_state_dict into it")

    # -- the contract ----------------------------------------------------------------
    @property
    def latents(self):
        return self._latents

    @property
    def observed_parents(self):
        """The latents each observed site depends on directly, read off the trial run (Pyro's prior dependencies)."""
        return self._observed_parents

    @property
    def global_latents(self):
        return self._global_latents

    @property
    def display_name(self) -> str:
        return self._name

    @property
    def example_rows(self) -> Optional[torch.Tensor]:
        """The data rows of the trial run, when :func:`from_pyro` was given data (``None``: it ran on zeros)."""
        return self._example_rows

    @property
    def cannot_generate(self) -> Optional[str]:
        """Why ``sample`` cannot draw x (``None`` if it can): covariate columns the model does not generate."""
        if self.covariates:
            return (f"{self._name} cannot generate data: columns {column_ranges(self.covariates)} of x are "
                    f"covariates it reads but does not observe, so it models p(observed columns | covariates) only")
        return None

    @property
    def likelihood_note(self) -> Optional[str]:
        """What log p(x) means for this model when it is not the density of all of x."""
        if not self.covariates:
            return None
        observed = tuple(c for c in range(self.x_dim) if c not in self.covariates)
        return (f"log p(x) here is log p(x[:, {column_ranges(observed)}] | x[:, {column_ranges(self.covariates)}]): "
                f"the model observes columns {column_ranges(observed)} and conditions on the covariates "
                f"{column_ranges(self.covariates)}")

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """Draw ``n`` new data: ``model(None, idx=None, N=n)``, its observed sites put into their columns of x.

        With ``mean=True`` each site's E[x_s | z] (pixel probabilities for a Bernoulli site)."""
        if self.cannot_generate:
            raise ZooError(f"{self.cannot_generate}; train and evaluate it, but draw no samples")
        trace = poutine.trace(self.model).get_trace(None, N=n)
        x = torch.zeros(n, self.x_dim, device=self.device)
        for o in self.observed:
            site = trace.nodes[o.name]
            value = site["value"]
            if mean:
                try:
                    value = site["fn"].mean
                except NotImplementedError:        # no closed-form mean: the draw itself
                    pass
            x[:, list(o.columns)] = value.reshape(n, len(o.columns)).to(x.dtype)
        return x

    def validate_data(self, x: torch.Tensor, what: str = "data") -> None:
        """The contract's checks, with the binary check on the columns that Bernoulli sites observe only."""
        check_data(x, self.x_dim, binary=False, what=what, model_name=self._name)
        binary = [c for o in self.observed if o.likelihood == "bernoulli" for c in o.columns]
        if binary and not ((x[:, binary] == 0) | (x[:, binary] == 1)).all():
            sites = ", ".join(repr(o.name) for o in self.observed if o.likelihood == "bernoulli")
            raise ZooError(f"{what} has values other than 0 and 1 in columns {column_ranges(sorted(binary))}, but "
                           f"{self._name} observes them with a Bernoulli likelihood (site {sites}); binarize the "
                           f"data or use a Gaussian likelihood")
        for o in self.observed:
            v = x[:, list(o.columns)]
            if o.levels and not ((v == torch.round(v)) & (v >= 0) & (v <= o.levels - 1)).all():
                raise ZooError(f"{what} has values other than the integers 0..{o.levels - 1} in columns "
                               f"{column_ranges(o.columns)}, but {self._name} observes them at site {o.name!r} "
                               f"with a likelihood over {o.levels} levels; give the data as levels (digits17)")

    def model(self, x=None, idx=None, N=None):
        if x is not None:
            B = x.shape[0]
            if idx is None:
                if N is not None and N != B:
                    raise ValueError(f"a minibatch of {B} out of N={N} needs its indices idx")
                idx = torch.arange(B, device=x.device)
            N = B if N is None else N
        elif N is None:
            raise ValueError("give either data x or the number of data N to generate")
        with ObservationColumns(self.observed):
            return call_owned(self, self._with_covariates if self.covariate_dim else self._fn, x, idx, N)

    def _with_covariates(self, x, idx=None, N=None):
        """The user's function with the covariates apart: the first ``x_dim - covariate_dim`` columns as ``x``,
        the rest as ``covariates`` (views of x, so the trial run still reads which columns each site holds)."""
        if x is None:
            return self._fn(None, covariates=None, idx=idx, N=N)
        d = self.x_dim - self.covariate_dim
        return self._fn(x[..., :d], covariates=x[..., d:], idx=idx, N=N)

    def _check_covariates_taken(self) -> None:
        """A model given covariates must declare ``covariates=``, and one that declares it must be given some."""
        takes = _takes_named(self._fn, "covariates")
        if self.covariate_dim and not takes:
            raise ZooError(f"{self._name} is given {self.covariate_dim} covariate column(s) (--covariates) and does not "
                           f"take them: declare model(x, covariates=None, idx=None, N=None)")
        if takes and not self.covariate_dim:
            raise ZooError(f"{self._name} takes covariates=, and the data have none: name them with --covariates "
                           f"NAMES (columns of a .csv, arrays of an .npz), or pass covariate_dim to from_pyro")

    # -- building ----------------------------------------------------------------------
    def _inspect(self, example):
        """The trial runs: adopt parameters, then read latents, parents and observations off the trace.

        Three calls: ``model(x, idx, N)`` on a minibatch of B = 3 out of N = 7 (the declaration is
        read off its trace; again at :data:`~zoo.usercode.trace.TRIAL_SEEDS` seeds, which must sample the same
        sites, :func:`~zoo.usercode.trace.check_fixed_sites`); the same under a ``"particles"`` plate of 2 left of the data plate, as
        the zoo's objectives (iwae, ``--particles``) and the harness run it (so a shape written for
        one particle, ``loc.view(B, D)`` or ``torch.ones(z.shape[0], 1)``, is refused here, not
        deep in training); and the generation call ``model(None, idx=None, N=n)``, once plain and
        once vectorized, unless some columns of x are covariates (then x cannot be generated and
        :meth:`sample` says so).
        """
        x = trial_rows(example, self.x_dim, self.device)
        self._example_rows = None if example is None else x.detach().clone()
        idx = torch.arange(TRIAL_B, device=x.device)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.adopting = True
            try:
                trace = self._trial(lambda: poutine.trace(self.model).get_trace(x, idx=idx, N=TRIAL_N), "scoring data")
                traces = [trace]
                for seed in range(TRIAL_SEEDS):           # the same sites at every seed, or a guide cannot fit
                    torch.manual_seed(seed)
                    traces.append(self._trial(lambda: poutine.trace(self.model).get_trace(x, idx=idx, N=TRIAL_N),
                                              "scoring data"))
            finally:
                self.adopting = False
            check_subsample(traces, idx, self._name)
            check_fixed_sites([site_signature(t) for t in traces], self._name)
            latents = read_latents(trace, self._name)
            self.observed, self.factors = read_observations(trace, x, self._name)
            observed_columns = {c for o in self.observed for c in o.columns}
            self.covariates = tuple(c for c in range(self.x_dim) if c not in observed_columns)
            deps = self._trial(lambda: get_dependencies(self.model, (x,), {"idx": idx, "N": TRIAL_N}),
                               "scoring data")["prior_dependencies"]
            self._trial(lambda: poutine.trace(vectorize(self.model, TRIAL_PARTICLES)).get_trace(
                x, idx=idx, N=TRIAL_N), _PARTICLES_WHAT)
            if not self.covariates:
                self._trial(lambda: poutine.trace(self.model).get_trace(None, N=2), "generating data (x=None, N=2)")
                self._trial(lambda: poutine.trace(vectorize(self.model, TRIAL_PARTICLES)).get_trace(
                    None, N=TRIAL_B), f"generating data (x=None, N={TRIAL_B}) {_PARTICLES_WHAT}")
        # parents are read within a scope: a local site's local parents (what its guide may condition
        # on), a global site's global ones; a local site's dependence on theta is the model's business.
        latents = tuple(LatentSite(s.name, s.event_shape, s.support, s.num_classes,
                                   tuple(p.name for p in latents if p.name != s.name and p.scope == s.scope
                                         and p.name in deps.get(s.name, {})), form=s.form, scope=s.scope,
                                   constraint=s.constraint, plates=s.plates, event_dim=s.event_dim)
                        for s in latents)
        self._global_latents = tuple(s for s in latents if s.scope == "global")
        latents = tuple(s for s in latents if s.scope == "local")
        self._observed_parents = observed_parents(trace, deps, [s.name for s in latents])
        kinds = {o.likelihood for o in self.observed}
        levels = {o.levels for o in self.observed}
        if kinds == {"levels"} and len(levels) == 1 and not self.covariates:
            self.levels = levels.pop()          # log p(x) is a probability of k-level data: it has bits/dim
        return latents, (kinds.pop() if len(kinds) == 1 else "gaussian")

    def _trial(self, run: Callable, what: str):
        """``run()``, a call of the model on a trial run; an error in the user's code is one line naming
        its file and line."""
        if _PARTICLES_WHAT in what:
            return call_user(run, self._name, f"on a trial run {what}", "write shapes from the right, as Pyro's "
                             "vectorized particles need (z.shape[:-1], loc.view(*z.shape[:-1], D), x.shape[-1]), never "
                             "z.shape[0] or view(B, D)", plate_hint=False)
        return call_user(run, self._name, f"on a trial run {what}", "the zoo calls model(x, idx=idx, N=N), and "
                         "model(None, idx=None, N=n) to generate")

    def _claim_parameters(self) -> None:
        """Mark every parameter as this model's; refuse one that a live zoo model already holds."""
        claim_parameters(self, "model", f"{self._name}'s networks already belong to another zoo {{}}; build fresh "
                                        f"ones for each: pass a factory, def make(x_dim): ... return model, to "
                                        f"from_pyro(make, x_dim)")


def _module_entry_point(owner: nn.Module, fn, name: str) -> Callable:
    """The model function of a user's ``nn.Module``: its ``model`` method, the bound method given, or
    the module itself when its entry point is ``forward(x, idx=None, N=None)`` (a ``PyroModule``'s
    usual form; called through ``__call__``, so a ``PyroModule`` sets up its own parameter context)."""
    if callable(getattr(owner, "model", None)):
        return owner.model
    if fn is not owner:
        return fn
    if type(owner).forward is not nn.Module.forward:
        return owner
    raise ZooError(f"{name}: an nn.Module given to from_pyro needs a model(x, idx=None, N=None) or "
                   f"forward(x, idx=None, N=None) method")
