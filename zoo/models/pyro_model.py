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
(:class:`ObservedSite`), and :meth:`PyroModel.sample` puts each site's draw into its columns.
Columns no site observes are *covariates* (a regression's features ``x[:, :-1]``): log p(x) is
then log p(observed columns | covariates), the run's note says so, and ``sample`` is refused.
``pyro.factor`` terms inside the plate count in log p(x | z); ``pyro.deterministic`` sites are
ignored. Each observed column's likelihood (Bernoulli if its site has boolean support, else
Gaussian) decides which data are valid.

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

import contextlib
import contextvars
import gc
import hashlib
import importlib.util
import inspect
import itertools
import re
import sys
import traceback
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import identity_transform

from zoo.core.contract import LatentSite, ZooModel, check_data
from zoo.core.errors import ZooError
from zoo.core.components import MODELS, Component, Options, option
from zoo.core.weights import is_deterministic, is_factor, vectorize

__all__ = ["from_pyro", "PyroModel", "ObservedSite", "load_model_file", "is_model_file", "model_label",
           "file_sha256", "absolute_spec", "only_named_files", "user_code_errors", "resolve_file", "claim_parameters"]

#: The trial run's minibatch: B rows out of N, sizes unlikely to coincide with a latent's own dimensions.
_TRIAL_B, _TRIAL_N = 3, 7
#: The vectorized trial run's particles per datum (a "particles" plate left of the data plate).
_TRIAL_PARTICLES = 2
_PARTICLES_WHAT = f"under {_TRIAL_PARTICLES} vectorized particles per datum (as iwae, --particles and the evaluation run it)"


def from_pyro(model, x_dim: Optional[int] = None, *, data: Optional[torch.Tensor] = None,
              name: Optional[str] = None) -> "PyroModel":
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
    if _is_factory(model):
        model = model(int(x_dim))
    elif inspect.isclass(model):
        raise ZooError(f"{name} is a class whose __init__ does not take x_dim first, so the zoo cannot build it; "
                       f"pass an instance, from_pyro({name}(...), x_dim), or make x_dim its first argument, "
                       f"def __init__(self, x_dim, ...)")
    return PyroModel(model, int(x_dim), name=name, example=data)


def _is_factory(obj) -> bool:
    """A callable whose first parameter is named ``x_dim`` (a class: its ``__init__``'s)."""
    if not callable(obj) or isinstance(obj, nn.Module):
        return False
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "x_dim"


#: The attribute of a parameter that names (weakly) the PyroModel owning it: two zoo models never share one.
_OWNER = "_pyro_zoo_owner"

_FROZEN_WARNING = ".*was not registered in the param store because requires_grad=False.*"


class PyroModel(ZooModel):
    """A user's Pyro model under the zoo contract; made by :func:`from_pyro`.

    Attributes:
        networks: the ``nn.Module`` objects the model function names (closure or globals).
        user: the user's ``nn.Module`` when the model is its ``model`` method.
        params: ``pyro.param`` values (unconstrained) and adopted ``pyro.module`` parameters.
    """

    def __init__(self, fn, x_dim: int, name: str = "model", example: Optional[torch.Tensor] = None):
        super().__init__(x_dim)
        self._name = name
        owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module):
            self.user = owner
            # the entry point may be the module itself (its forward): kept out of nn.Module's registry, as `user` holds it
            object.__setattr__(self, "_fn", _module_entry_point(owner, fn, name))
        elif callable(fn):
            self._fn = fn
            found = _named_modules(fn)
            if found:
                self.networks = nn.ModuleDict(found)
        else:
            raise ZooError(f"from_pyro needs a Pyro model function or factory, got {type(fn).__name__}")
        self.params = nn.ParameterDict()
        self._sites: Dict[str, Tuple[str, constraints.Constraint]] = {}   # param site -> (own name, constraint)
        self._adopting = False                   # on the trial run only: new param sites become parameters
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
    def cannot_generate(self) -> Optional[str]:
        """Why ``sample`` cannot draw x (``None`` if it can): covariate columns the model does not generate."""
        if self.covariates:
            return (f"{self._name} cannot generate data: columns {_column_ranges(self.covariates)} of x are "
                    f"covariates it reads but does not observe, so it models p(observed columns | covariates) only")
        return None

    @property
    def likelihood_note(self) -> Optional[str]:
        """What log p(x) means for this model when it is not the density of all of x."""
        if not self.covariates:
            return None
        observed = tuple(c for c in range(self.x_dim) if c not in self.covariates)
        return (f"log p(x) here is log p(x[:, {_column_ranges(observed)}] | x[:, {_column_ranges(self.covariates)}]): "
                f"the model observes columns {_column_ranges(observed)} and conditions on the covariates "
                f"{_column_ranges(self.covariates)}")

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
            raise ZooError(f"{what} has values other than 0 and 1 in columns {_column_ranges(sorted(binary))}, but "
                           f"{self._name} observes them with a Bernoulli likelihood (site {sites}); binarize the "
                           f"data or use a Gaussian likelihood")

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
        device = self.device
        # On a GPU, tensors the model makes (torch.zeros(2) for a prior's mean) are made there too;
        # on the CPU nothing changes, and torch's device mode, which sees every op, is not paid for.
        with _OwnParameters(self), _ObservationColumns(self), (torch.device(device) if device.type != "cpu" else contextlib.nullcontext()):
            if self.training:
                return self._fn(x, idx=idx, N=int(N))
            with warnings.catch_warnings():       # pyro.module on a frozen network (a guide refit) warns
                warnings.filterwarnings("ignore", message=_FROZEN_WARNING)
                return self._fn(x, idx=idx, N=int(N))

    # -- building ----------------------------------------------------------------------
    def _inspect(self, example):
        """The trial runs: adopt parameters, then read latents, parents and observations off the trace.

        Three calls: ``model(x, idx, N)`` on a minibatch of B = 3 out of N = 7 (the declaration is
        read off its trace); the same under a ``"particles"`` plate of 2 left of the data plate, as
        the zoo's objectives (iwae, ``--particles``) and the harness run it (so a shape written for
        one particle, ``loc.view(B, D)`` or ``torch.ones(z.shape[0], 1)``, is refused here, not
        deep in training); and the generation call ``model(None, idx=None, N=n)``, once plain and
        once vectorized, unless some columns of x are covariates (then x cannot be generated and
        :meth:`sample` says so).
        """
        if example is not None:
            x = example[:_TRIAL_B]
            while x.shape[0] < _TRIAL_B:
                x = torch.cat([x, x])[:_TRIAL_B]
        else:
            x = torch.zeros(_TRIAL_B, self.x_dim)
        x = x.to(self.device).contiguous()
        idx = torch.arange(_TRIAL_B, device=x.device)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._adopting = True
            try:
                trace = self._trial(lambda: poutine.trace(self.model).get_trace(x, idx=idx, N=_TRIAL_N), "scoring data")
            finally:
                self._adopting = False
            latents = _read_latents(trace, self._name, self.x_dim)
            self.observed, self.factors = _read_observations(trace, x, self._name)
            observed_columns = {c for o in self.observed for c in o.columns}
            self.covariates = tuple(c for c in range(self.x_dim) if c not in observed_columns)
            from pyro.infer.inspect import get_dependencies
            deps = self._trial(lambda: get_dependencies(self.model, (x,), {"idx": idx, "N": _TRIAL_N}),
                               "scoring data")["prior_dependencies"]
            self._trial(lambda: poutine.trace(vectorize(self.model, _TRIAL_PARTICLES)).get_trace(
                x, idx=idx, N=_TRIAL_N), _PARTICLES_WHAT)
            if not self.covariates:
                self._trial(lambda: poutine.trace(self.model).get_trace(None, N=2), "generating data (x=None, N=2)")
                self._trial(lambda: poutine.trace(vectorize(self.model, _TRIAL_PARTICLES)).get_trace(
                    None, N=_TRIAL_B), f"generating data (x=None, N={_TRIAL_B}) {_PARTICLES_WHAT}")
        # parents are read within a scope: a local site's local parents (what its guide may condition
        # on), a global site's global ones; a local site's dependence on theta is the model's business.
        latents = tuple(LatentSite(s.name, s.event_shape, s.support, s.num_classes,
                                   tuple(p.name for p in latents if p.name != s.name and p.scope == s.scope
                                         and p.name in deps.get(s.name, {})), form=s.form, scope=s.scope,
                                   constraint=s.constraint, plates=s.plates, event_dim=s.event_dim)
                        for s in latents)
        self._global_latents = tuple(s for s in latents if s.scope == "global")
        latents = tuple(s for s in latents if s.scope == "local")
        self._observed_parents = _observed_parents(trace, deps, [s.name for s in latents])
        kinds = {o.likelihood for o in self.observed}
        return latents, ("bernoulli" if kinds == {"bernoulli"} else "gaussian")

    def _trial(self, run: Callable, what: str):
        try:
            return run()
        except ZooError:
            raise
        except Exception as e:
            where = _user_line(e)
            if _PARTICLES_WHAT in what:
                raise ZooError(f"{self._name} failed on a trial run {what}{where}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}; write shapes from the right, as "
                               f"Pyro's vectorized particles need (z.shape[:-1], loc.view(*z.shape[:-1], D), "
                               f"x.shape[-1]), never z.shape[0] or view(B, D)") from None
            if "Shape mismatch inside plate('data')" in str(e):
                raise ZooError(f"{self._name}{where}: {str(e).splitlines()[0]}; inside pyro.plate('data', ...) a "
                               f"datum's value must be one event: add .to_event(1) to its distribution") from None
            raise ZooError(f"{self._name} failed on a trial run {what}{where}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}; the zoo calls model(x, idx=idx, N=N), "
                           f"and model(None, idx=None, N=n) to generate") from None

    def _adopt(self, site: str, init, constraint) -> None:
        """Make the tensor a ``param`` site starts from one of this model's parameters."""
        if callable(init) and not torch.is_tensor(init):
            init = init()
        if init is None:
            raise ZooError(f"pyro.param({site!r}) has no initial value in {self._name}; give one, e.g. "
                           f"pyro.param({site!r}, torch.zeros(3)) (the zoo does not read Pyro's global param store)")
        if not torch.is_tensor(init):
            init = torch.as_tensor(init, dtype=torch.get_default_dtype())
        owned = {id(p): n for n, p in self.named_parameters()}
        if isinstance(init, nn.Parameter) and constraint is constraints.real:
            if id(init) in owned:                          # a network of ours: pyro.module on it
                self._sites[site] = (owned[id(init)], constraint)
                return
            value = init                                   # pyro.module on a network we did not find
        else:
            unconstrained = torch.distributions.transform_to(constraint).inv(init.detach())
            value = nn.Parameter(unconstrained.detach().clone().to(self.device))
        key = site.replace("$$$", "__").replace(".", "_")
        while key in self.params:
            key += "_"
        self.params[key] = value
        self._sites[site] = (f"params.{key}", constraint)

    def _claim_parameters(self) -> None:
        """Mark every parameter as this model's; refuse one that a live zoo model already holds."""
        claim_parameters(self, _OWNER, {_OWNER: "model"},
                         f"{self._name}'s networks already belong to another zoo {{}}; build fresh ones for each: "
                         f"pass a factory, def make(x_dim): ... return model, to from_pyro(make, x_dim)")


def claim_parameters(owner: nn.Module, mark: str, others: Dict[str, str], message: str) -> None:
    """Mark every parameter of ``owner`` with a weak reference to it under the attribute ``mark``, after
    refusing any parameter that a live component already holds under one of ``others`` (attribute ->
    what it names, "model" or "guide"; ``message`` is formatted with that word).

    Parameters belong to one zoo model or guide: the user's function holds its networks in a closure,
    so two wrappers of the same networks would silently train and score each other's weights."""
    for p in owner.parameters():
        for attribute, kind in others.items():
            other = getattr(p, attribute, lambda: None)()
            if other is not None and other is not owner:
                del other
                gc.collect()                               # a dropped owner may only wait for the collector
                if getattr(p, attribute)() is not None:
                    raise ZooError(message.format(kind))
    for p in owner.parameters():
        setattr(p, mark, weakref.ref(owner))


class _OwnParameters(Messenger):
    """Answer every ``param`` message with the zoo model's own tensor (constrained as declared)."""

    def __init__(self, model: PyroModel):
        super().__init__()
        self.model = model

    def _pyro_param(self, msg):
        model = self.model
        name = msg["name"]
        if name not in model._sites:
            if not model._adopting:
                raise ZooError(f"{model.display_name} made the parameter {name!r} after it was wrapped (it did not "
                               f"occur on the trial run); create every pyro.param on every call")
            init = msg["args"][1] if len(msg["args"]) > 1 else None
            model._adopt(name, init, msg["kwargs"].get("constraint", constraints.real))
        own_name, constraint = model._sites[name]
        unconstrained = _parameter_at(model, own_name)
        transform = torch.distributions.transform_to(constraint)
        value = unconstrained if transform is identity_transform else transform(unconstrained)
        value.unconstrained = weakref.ref(unconstrained)
        msg["value"] = value
        msg["done"] = True


class _ObservationColumns(Messenger):
    """Tag each observed site with the columns of x it holds (``infer["zoo_columns"]``), read at the
    trial run, so that :mod:`zoo.core.weights` can assemble E[x | z] from several sites."""

    def __init__(self, model: PyroModel):
        super().__init__()
        self.columns = {o.name: o.columns for o in model.observed}

    def _pyro_sample(self, msg):
        columns = self.columns.get(msg["name"])
        if columns is not None:
            msg["infer"] = {**(msg["infer"] or {}), "zoo_columns": columns}


def _parameter_at(module: nn.Module, path: str) -> torch.Tensor:
    """``module.get_parameter(path)`` read off the registries: a ``PyroModule``'s attribute access
    inside a Pyro handler is itself a ``param`` message, which would come back here without end."""
    *names, leaf = path.split(".")
    for name in names:
        module = module._modules[name]
    return module._parameters[leaf]


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


def _named_modules(fn) -> Dict[str, nn.Module]:
    """The ``nn.Module`` objects a function names: its closure variables and the globals it uses."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return {}
    found = {}
    for var, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:                     # an empty cell
            continue
        if isinstance(value, nn.Module):
            found[var] = value
    module_globals = getattr(fn, "__globals__", {})
    for var in code.co_names:
        if isinstance(module_globals.get(var), nn.Module) and var not in found:
            found[var] = module_globals[var]
    seen, unique = set(), {}
    for var, module in found.items():          # one module under two names: keep the first
        if id(module) not in seen and var.isidentifier():
            seen.add(id(module))
            unique[var] = module
    return unique


def _user_line(error: BaseException) -> str:
    """`` (file.py, line 12)``: the last frame of the traceback in the user's code (not in Python's
    library, installed packages, or the zoo)."""
    import sysconfig
    root = Path(__file__).resolve().parents[2]
    library = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    library += [root / "zoo", root / "guides"]
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        path = str(Path(frame.filename).resolve()) if not frame.filename.startswith("<") else ""
        if path and not any(path.startswith(str(Path(lib).resolve())) for lib in library):
            return f" ({Path(frame.filename).name}, line {frame.lineno})"
    return ""


@contextlib.contextmanager
def user_code_errors(name: str, what: str):
    """Within the block, an exception raised in a user's own code (a model file: any frame outside
    Python's library, the installed packages and the zoo) becomes one line naming the file and line,
    as on the trial run; an exception from the zoo, Pyro or PyTorch alone is a bug and keeps its traceback.

    ``name`` is the model's display name, ``what`` where it failed ("in training at epoch 3, step 1").
    """
    try:
        yield
    except ZooError:
        raise
    except Exception as e:
        where = _user_line(e)
        if not where:
            raise
        raise ZooError(f"{name} failed {what}{where}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}; fix the model there") from None


# -- reading the trace -----------------------------------------------------------------------
def _read_latents(trace, name: str, x_dim: int):
    """The latent sites of a trial trace, checked against the contract."""
    latents, observed = [], []
    sites = [(n, s) for n, s in trace.nodes.items() if s["type"] == "sample" and not _is_plate_site(s)
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
            latents.append(_global_site(site_name, site, name))
            continue
        _check_plates(site_name, site, frames, name)
        _check_batch_shape(site_name, site)
        if not site["is_observed"]:
            latents.append(_latent_site(site_name, site["fn"]))
    if not observed:
        raise ZooError(f"{name} observes nothing; add pyro.sample('x', ..., obs=x) inside "
                       f"pyro.plate('data', N, subsample=idx)")
    scale = trace.nodes[observed[0]]["scale"]
    if not torch.is_tensor(scale) and abs(float(scale) - _TRIAL_N / _TRIAL_B) > 1e-6:
        raise ZooError(f"{name}'s data plate is not subsampled: a minibatch of {_TRIAL_B} out of N={_TRIAL_N} "
                       f"was scaled by {float(scale):.3g}, not N/B; open it as pyro.plate('data', N, subsample=idx)")
    if not latents:
        raise ZooError(f"{name} has no latent sample site; the zoo fits guides to latents: add one inside "
                       f"pyro.plate('data', N, subsample=idx), e.g. pyro.sample('z', dist.Normal(...).to_event(1))")
    return latents


def _observed_parents(trace, deps, latents) -> Tuple[Tuple[str, ...], ...]:
    """For each observed site of the trial trace (the observation, ``pyro.factor`` terms), the latents whose
    values its log-density depends on directly: ``pyro.infer.inspect.get_dependencies``'s prior dependencies,
    which track each value's provenance through the model's computation."""
    observed = [n for n, s in trace.nodes.items() if s["type"] == "sample" and s["is_observed"]
                and not _is_plate_site(s) and not is_deterministic(s)]
    return tuple(tuple(p for p in latents if p in deps.get(n, {})) for n in observed)


@dataclass(frozen=True)
class ObservedSite:
    """One observed site of a user's model and the columns of x it holds.

    Arguments:
        name: the Pyro sample-site name (``"x"``, ``"obs_x_1"``, ``"y"``).
        columns: the columns of x its value holds, in the order of its flattened event
            (``x[:, 8:16]`` holds 8..15, ``x[:, -1]`` holds D - 1).
        event_shape: the shape of one datum's value.
        likelihood: ``"bernoulli"`` (boolean support: its columns must be 0/1) or ``"gaussian"``
            (any finite value); it only decides which data are valid.
    """

    name: str
    columns: Tuple[int, ...]
    event_shape: Tuple[int, ...]
    likelihood: str


def _read_observations(trace, x: torch.Tensor, name: str):
    """The observed sites of a trial trace with the columns of ``x`` each holds, and the pyro.factor sites.

    Which columns a site holds is read off its value: an observation ``obs=x[:, 8:16]`` (or
    ``x[:, 0]``, ``x[:, :-1]``, ``x.view(B, T, d)[:, t]``) is a *view* of x, sharing its storage,
    so its storage offset and strides say which element of x each of its elements is
    (:func:`_columns_of`). A value that is not a view of x (a copy, ``x * 2``) cannot be placed
    and is refused, except the old contract's one site ``"x"`` with event shape ``(D,)``, which
    holds all of x. Columns no site holds are covariates (read by the model, not observed).
    """
    D = x.shape[1]
    observed, factors, owner = [], [], {}
    for site_name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or is_deterministic(site) or _is_plate_site(site):
            continue
        if is_factor(site):
            factors.append(site_name)
            continue
        event = tuple(int(n) for n in site["fn"].event_shape)
        columns = _columns_of(site["value"], x)
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
        support = site["fn"].support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        observed.append(ObservedSite(site_name, columns, event,
                                     "bernoulli" if support is constraints.boolean else "gaussian"))
    return tuple(observed), tuple(factors)


def _columns_of(value, x: torch.Tensor) -> Optional[Tuple[int, ...]]:
    """The columns of ``x`` ``[B, D]`` that ``value`` ``[B, *event]`` holds, if it is a view of x taking the
    same columns from every row (``None`` otherwise).

    Element i of a view sits at ``storage_offset + sum_k i_k stride_k`` of x's storage, so applying
    the view's geometry to ``arange(B * D)`` (x's element numbers) gives each element's row and column.
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


def _column_ranges(columns) -> str:
    """``0-6, 9``: a sorted list of column numbers as runs."""
    runs, columns = [], sorted(columns)
    for c in columns:
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _global_site(site_name: str, site, name: str) -> LatentSite:
    """A latent outside the data plate: one global site whose event shape is its whole value's shape
    (the dimensions of its own plates included, e.g. ``(K, D)`` for mixture locations in a plate of K).

    Its support must be continuous (real, or a constraint with a bijection to the reals, as
    ``biject_to`` gives for positive, simplex, interval...): the global guide is a Normal, or a point
    mass, on the unconstrained space. A discrete global (one value for the whole data set) has no
    such guide; the zoo refuses it."""
    fn = site["fn"]
    shape = tuple(int(s) for s in fn.batch_shape + fn.event_shape)
    plates = tuple((f.name, int(f.size), int(f.dim)) for f in site["cond_indep_stack"] if f.vectorized)
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if _is_discrete(support):
        raise ZooError(f"{name}'s latent {site_name!r} is outside the data plate (a global latent) with discrete "
                       f"support {_support_name(fn.support)}; the zoo's global guides are continuous (Normal or "
                       f"MAP): move it inside pyro.plate('data', N, subsample=idx), or make it a pyro.param")
    if not _has_bijection(support):
        raise ZooError(f"{name}'s global latent {site_name!r} has support {_support_name(fn.support)}, which has "
                       f"no bijection to the reals (torch's biject_to); reparameterize it, e.g. sample its log "
                       f"from a Normal")
    return LatentSite(site_name, shape, "real", scope="global",
                      constraint=constraints.real if support is constraints.real else support,
                      plates=plates, event_dim=len(fn.event_shape))


def _is_plate_site(site) -> bool:
    return type(site["fn"]).__name__ == "_Subsample"


def _check_plates(site_name, site, frames, name) -> None:
    for f in frames:
        if f.name == "data" and f.size != _TRIAL_B:
            raise ZooError(f"{name}'s data plate is not subsampled: a minibatch of {_TRIAL_B} out of N={_TRIAL_N} "
                           f"gave a plate of {f.size}; open it as pyro.plate('data', N, subsample=idx)")
        if f.name == "data" and f.dim != -1:
            raise ZooError(f"{name}'s data plate is at dim {f.dim}; the zoo puts it at dim -1 (its particle "
                           f"plates go to the left): drop the dim argument of pyro.plate('data', ...)")
        if f.name != "data":
            raise ZooError(f"site {site_name!r} of {name} is inside plate {f.name!r}; the zoo's models have the "
                           f"'data' plate only: declare the per-datum dimensions an event with .to_event(1)")


def _check_batch_shape(site_name, site) -> None:
    batch = tuple(site["fn"].batch_shape)
    if batch != (_TRIAL_B,):
        raise ZooError(f"site {site_name!r} has batch shape {batch} for a minibatch of {_TRIAL_B}; a datum's "
                       f"value must be one event: add .to_event(1) (or .to_event(n) for n per-datum dimensions)")


def _latent_site(site_name: str, fn) -> LatentSite:
    """Name, event shape, zoo support and value form of one latent, from its distribution's ``support``.

    Pyro's usual one-variable discrete sites are taken as written (their :attr:`LatentSite.form`):
    ``Bernoulli(p)`` (event ``()``), ``OneHotCategorical(p)`` (event ``(K,)``) and ``Categorical(p)``
    (event ``()``, integer values); so are the zoo's vector forms ``Bernoulli(...).to_event(1)``
    (event ``(K,)``) and ``OneHotCategorical(...).to_event(1)`` (event ``(n, K)``).
    """
    event = tuple(int(s) for s in fn.event_shape)
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
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
    if _has_bijection(support) and not _is_discrete(support):    # Gamma, LogNormal, Dirichlet, Beta...
        return LatentSite(site_name, event, "real", constraint=support)
    hint = (" give one Categorical per site (event shape ()), or OneHotCategorical(logits).to_event(1) with "
            "logits of shape (n, K) for n of them" if isinstance(support, constraints.integer_interval)
            else " reparameterize it, e.g. sample its log from a Normal")
    raise ZooError(f"latent {site_name!r} has support {_support_name(fn.support)}, which the zoo's guides do not "
                   f"cover (real, binary, categorical):{hint}")


def _is_discrete(support) -> bool:
    try:
        return bool(support.is_discrete)
    except NotImplementedError:                 # a dependent support: not known until the site's parameters are
        return False


def _has_bijection(support) -> bool:
    """Whether torch's ``biject_to`` maps the reals onto ``support`` (what a guide's Normal is pushed through)."""
    try:
        torch.distributions.biject_to(support)
        return True
    except NotImplementedError:
        return False


def _support_name(support) -> str:
    """``positive``, ``simplex``, ``integer_interval``: Pyro's name for a support."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    for public in dir(constraints):
        if not public.startswith("_") and getattr(constraints, public) is support:
            return public
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(support).__name__.lstrip("_")).lower()


# -- model files: the CLI's FILE.py:NAME ------------------------------------------------------
def is_model_file(spec: str) -> bool:
    """Whether a model name is a ``FILE.py:NAME`` spec (or a bare ``FILE.py``, refused with a hint)."""
    return isinstance(spec, str) and (spec.endswith(".py") or ".py:" in spec)


def model_label(spec: str) -> str:
    """A name fit for folder names: a registry name as it is, ``FILE.py:NAME`` as ``NAME``."""
    return spec.rpartition(":")[2] if is_model_file(spec) else spec


_loads = itertools.count()


#: What NAME in a ``FILE.py:NAME`` of each kind must be (model files here, guide files in :mod:`guides.user`).
FILE_KINDS = {"model": "a Pyro model function, or a factory def NAME(x_dim) that returns one",
              "guide": "a Pyro guide function guide(x, idx=None, N=None), or a factory def NAME(model) that "
                       "returns one"}


def _split(spec: str, kind: str = "model") -> Tuple[Path, str]:
    path, _, attr = spec.rpartition(":")
    if not spec.rpartition(":")[0].endswith(".py"):
        raise ZooError(f"{kind} {spec!r}: name the {kind} in the file too, FILE.py:NAME ({FILE_KINDS[kind]})")
    if not attr.isidentifier():
        raise ZooError(f"{kind} {spec!r}: {attr!r} is not a Python name; give FILE.py:NAME")
    return Path(path), attr


def load_model_file(spec: str, expected_sha256: Optional[str] = None, kind: str = "model"):
    """Import ``FILE.py`` afresh and return ``(its NAME, the file's SHA-256)``; one ZooError for each failure.

    The file is read once; with ``expected_sha256`` those bytes are hashed and compared *before*
    anything in them runs, and the very bytes that were hashed are the ones executed. ``kind``
    ("model" or "guide") is what the file holds, for the messages.
    """
    path, attr = _split(spec, kind)
    if not path.is_file():
        raise ZooError(f"{kind} file {str(path)!r} not found ({kind} {spec!r}; relative paths start at "
                       f"{Path.cwd()})")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ZooError(f"{kind} file {str(path)!r} changed since this run was made (its SHA-256 differs "
                       f"from the run's); nothing in it was run: give the run's own {kind} file, or train a new run")
    module_name = f"pyro_zoo_user_model_{next(_loads)}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module           # dataclasses and the like look their module up while it runs
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as e:
        raise ZooError(f"{kind} file {str(path)!r} has a syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        raise ZooError(f"importing {kind} file {str(path)!r} failed{_user_line(e)}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        sys.modules.pop(module_name, None)
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise ZooError(f"{kind} file {str(path)!r} has no {attr!r}; it defines: {', '.join(defined) or 'nothing callable'}")
    return getattr(module, attr), digest


def file_sha256(spec: str, kind: str = "model") -> str:
    """The SHA-256 of the file of a ``FILE.py:NAME`` spec, read without importing it."""
    path, _ = _split(spec, kind)
    if not path.is_file():
        raise ZooError(f"{kind} file {str(path)!r} not found (relative paths start at {Path.cwd()})")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def absolute_spec(spec: str) -> str:
    """``FILE.py:NAME`` with FILE made absolute: what a run records, so it never depends on the current folder."""
    if not is_model_file(spec):
        return spec
    path, attr = _split(spec)
    return f"{path.resolve()}:{attr}"


#: While set (a run folder is being read), the model files that may be imported: spec -> expected SHA-256.
_NAMED_FILES: contextvars.ContextVar[Optional[Dict[str, str]]] = contextvars.ContextVar("named_files", default=None)


@contextlib.contextmanager
def only_named_files(named: Dict[str, str]):
    """Within the block, a ``FILE.py:NAME`` model resolves only if it is in ``named`` (spec -> SHA-256
    recorded by the run), and its bytes are checked against that hash before they run.

    The reader of a run folder opens this block: a run folder is data, and nothing it names is
    imported unless the user named it on the command line (and it is the file the run was made with).
    """
    token = _NAMED_FILES.set(dict(named))
    try:
        yield
    finally:
        _NAMED_FILES.reset(token)


@dataclass
class ModelFileOptions(Options):
    """The one option of a model file: its fingerprint, recorded in the run's config."""

    source_sha256: Optional[str] = option(None, "SHA-256 of the model file when the run was made; a resumed or "
                                          "re-evaluated run refuses a changed file", cli=False)


def _build_from_file(spec: str, x_dim: int, source_sha256: Optional[str] = None) -> PyroModel:
    obj, _ = load_model_file(spec, expected_sha256=source_sha256)       # checked before it runs
    return from_pyro(obj, x_dim, name=_split(spec)[1])


_COMPONENTS: Dict[Tuple, Component] = {}
_DIGESTS: Dict[Tuple, str] = {}             # the SHA-256 of the bytes each cached component was imported from


def resolve_model_file(spec: str) -> Optional[Component]:
    """The registry entry of a ``FILE.py:NAME`` spec (the file is imported once here, to fail early)."""
    if not is_model_file(spec):
        return None

    def component(obj, digest: str, path: Path, attr: str) -> Component:
        if not callable(obj):
            raise ZooError(f"{attr!r} in {str(path)!r} is a {type(obj).__name__}, not a Pyro model function or factory")
        description = (inspect.getdoc(obj) or f"Pyro model {attr} from {path}").split("\n")[0]
        return Component("model", spec, lambda x_dim, **options: _build_from_file(spec, x_dim, **options),
                         ModelFileOptions, description, {"pinned_options": lambda: {"source_sha256": digest}})
    return resolve_file(spec, "model", component)


def resolve_file(spec: str, kind: str, component: Callable) -> Component:
    """The registry entry of the ``kind`` file ``spec`` ("model" or "guide"), imported once and cached
    while the file is unchanged: ``component(obj, digest, path, attr)`` makes it from the file's NAME.

    While a run folder is read (:func:`only_named_files`), only a file the user named resolves, and
    its bytes are checked against the run's SHA-256 before they run."""
    path, attr = _split(spec, kind)
    named = _NAMED_FILES.get()
    if named is not None and spec not in named:
        raise ZooError(f"{kind} {spec!r} is named by a run folder, and the zoo does not import files a run folder "
                       f"names; name the {kind} file on the command line (--{kind} FILE.py:NAME)")
    expected = named.get(spec) if named is not None else None
    stat = path.stat() if path.is_file() else None
    key = (kind, spec, str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size))
    if key not in _COMPONENTS or (expected is not None and _DIGESTS[key] != expected):
        obj, digest = load_model_file(spec, expected_sha256=expected, kind=kind)
        _COMPONENTS[key] = component(obj, digest, path, attr)
        _DIGESTS[key] = digest
    return _COMPONENTS[key]


MODELS.add_resolver(resolve_model_file)
