"""Your own Pyro model as a zoo model: :func:`from_pyro`.

An ordinary Pyro model joins the zoo if it keeps the contract of :mod:`zoo.core.contract`::

    def model(x, idx=None, N=None):
        pyro.module("decoder", decoder)                    # or pyro.param("w", init)
        with pyro.plate("data", N, subsample=idx):         # every latent and "x" in here
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

:func:`from_pyro` runs it once on a small batch under ``poutine.trace`` and reads off what the
guides need (every latent site's name, event shape, support and parents, in model order), the
likelihood (Bernoulli if ``"x"`` has boolean support, else Gaussian: it only decides which data
are valid) and the parameters, and returns a :class:`PyroModel`, a
:class:`~zoo.core.contract.ZooModel` that every guide, objective, the harness, ``gradients`` and
``compare`` take. Models with only small discrete latents get the exact log p(x) by enumeration,
as the built-in ones do.

**The call.** The zoo calls ``model(x, idx=idx, N=N)``: ``x`` is a minibatch ``[B, D]``, ``idx``
its row numbers in the data set (a LongTensor) and ``N`` the data set's size, so
``pyro.plate("data", N, subsample=idx)`` scales the minibatch by N / B. ``N`` is always an
integer; with data and no indices ``idx`` is ``arange(B)`` and ``N`` is ``B``. To draw new data
the zoo calls ``model(None, idx=None, N=n)``: the model must sample ``"x"`` when ``x`` is None.

**What it assumes** (each checked on the trial run, each refused in one line that says what to
do instead): every local latent is inside the ``"data"`` plate at dim -1 and in no other plate;
a latent outside the data plate is *global* (``model.global_latents``: its whole shape, its own
plates included, is one site, guided by :mod:`guides.globals`) and must be continuous; a local
latent's support is real (``Normal``, ``MultivariateNormal``, or constrained with a ``biject_to``:
``Gamma``, ``LogNormal``, ``Dirichlet``...), binary (``Bernoulli(...).to_event(1)``,
event shape ``(K,)``) or categorical (``OneHotCategorical(...).to_event(1)``, event shape
``(n, K)``); the one observation is the site ``"x"`` with event shape ``(D,)``.

**Parameters become the zoo model's own**, so ``model.parameters()``, ``state_dict``,
checkpoints, the optimizer and ``.to(device)`` see them, and nothing goes through Pyro's global
param store (where the first tensor stored under a name wins, so a second model built from the
same code would silently share the first one's values):

- ``nn.Module`` objects the model function names (a closure variable or a module-level global),
  or the object itself when it is an ``nn.Module`` with a ``model`` method, become sub-modules
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
:func:`from_pyro` call then builds its own networks, sized from the data. Model files given to
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
    ((LatentSite(name='z', event_shape=(2,), support='real', num_classes=None, parents=()),), 'gaussian', ['networks.W.bias', 'networks.W.weight'])

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

from zoo.core.contract import LatentSite, ZooModel
from zoo.core.errors import ZooError
from zoo.core.registry import MODELS, Component, Options, option

__all__ = ["from_pyro", "PyroModel", "load_model_file", "is_model_file", "model_label", "file_sha256",
           "absolute_spec", "only_named_files", "user_code_errors"]

#: The trial run's minibatch: B rows out of N, sizes unlikely to coincide with a latent's own dimensions.
_TRIAL_B, _TRIAL_N = 3, 7


def from_pyro(model, x_dim: Optional[int] = None, *, data: Optional[torch.Tensor] = None,
              name: Optional[str] = None) -> "PyroModel":
    """Wrap an ordinary Pyro model (see the module docstring for the contract it must keep).

    Arguments:
        model: a Pyro model function ``model(x, idx=None, N=None)``; an ``nn.Module`` with such a
            ``model`` method; or a factory whose first argument is ``x_dim`` and that returns one
            of these (a function, or an ``nn.Module`` class).
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
            if not callable(getattr(owner, "model", None)):
                raise ZooError(f"{name}: an nn.Module given to from_pyro needs a model(x, idx=None, N=None) method")
            self.user = owner
            self._fn = owner.model
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
    def global_latents(self):
        return self._global_latents

    @property
    def display_name(self) -> str:
        return self._name

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
        with _OwnParameters(self), (torch.device(device) if device.type != "cpu" else contextlib.nullcontext()):
            if self.training:
                return self._fn(x, idx=idx, N=int(N))
            with warnings.catch_warnings():       # pyro.module on a frozen network (a guide refit) warns
                warnings.filterwarnings("ignore", message=_FROZEN_WARNING)
                return self._fn(x, idx=idx, N=int(N))

    # -- building ----------------------------------------------------------------------
    def _inspect(self, example):
        """The trial run: adopt parameters, then read latents, parents and likelihood off the trace."""
        if example is not None:
            x = example[:_TRIAL_B]
            while x.shape[0] < _TRIAL_B:
                x = torch.cat([x, x])[:_TRIAL_B]
        else:
            x = torch.zeros(_TRIAL_B, self.x_dim)
        x = x.to(self.device)
        idx = torch.arange(_TRIAL_B, device=x.device)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._adopting = True
            try:
                trace = self._trial(lambda: poutine.trace(self.model).get_trace(x, idx=idx, N=_TRIAL_N), "scoring data")
            finally:
                self._adopting = False
            latents = _read_latents(trace, self._name, self.x_dim)
            from pyro.infer.inspect import get_dependencies
            deps = self._trial(lambda: get_dependencies(self.model, (x,), {"idx": idx, "N": _TRIAL_N}),
                               "scoring data")["prior_dependencies"]
            self._trial(lambda: poutine.trace(self.model).get_trace(None, N=2), "generating data (x=None, N=2)")
        # parents are read within a scope: a local site's local parents (what its guide may condition
        # on), a global site's global ones; a local site's dependence on theta is the model's business.
        latents = tuple(LatentSite(s.name, s.event_shape, s.support, s.num_classes,
                                   tuple(p.name for p in latents if p.name != s.name and p.scope == s.scope
                                         and p.name in deps.get(s.name, {})), s.scope, s.constraint,
                                   s.plates, s.event_dim)
                        for s in latents)
        self._global_latents = tuple(s for s in latents if s.scope == "global")
        latents = tuple(s for s in latents if s.scope == "local")
        support = trace.nodes["x"]["fn"].support
        while isinstance(support, constraints.independent):
            support = support.base_constraint
        return latents, ("bernoulli" if support is constraints.boolean else "gaussian")

    def _trial(self, run: Callable, what: str):
        try:
            return run()
        except ZooError:
            raise
        except Exception as e:
            where = _user_line(e)
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
        for p in self.parameters():
            other = getattr(p, _OWNER, lambda: None)()
            if other is not None and other is not self:
                del other
                gc.collect()                               # a dropped model may only wait for the collector
                if getattr(p, _OWNER)() is not None:
                    raise ZooError(f"{self._name}'s networks already belong to another zoo model; build fresh "
                                   f"ones for each: pass a factory, def make(x_dim): ... return model, to "
                                   f"from_pyro(make, x_dim)")
        for p in self.parameters():
            setattr(p, _OWNER, weakref.ref(self))


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
        unconstrained = model.get_parameter(own_name)
        transform = torch.distributions.transform_to(constraint)
        value = unconstrained if transform is identity_transform else transform(unconstrained)
        value.unconstrained = weakref.ref(unconstrained)
        msg["value"] = value
        msg["done"] = True


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
    sites = [(n, s) for n, s in trace.nodes.items() if s["type"] == "sample" and not _is_plate_site(s)]
    if not any(f.name == "data" for _, s in sites for f in s["cond_indep_stack"]):
        raise ZooError(f"{name} has no data plate; put every latent and the observation 'x' inside "
                       f"pyro.plate('data', N, subsample=idx)")
    for site_name, site in sites:
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        data = [f for f in frames if f.name == "data"]
        if site["is_observed"]:
            observed.append(site_name)
            if site_name != "x":
                what = "a pyro.deterministic or pyro.factor site" if site["infer"].get("_deterministic") \
                    or type(site["fn"]).__name__ == "Unit" else "observed"
                raise ZooError(f"{name}'s site {site_name!r} is {what}; the zoo scores one observation, the "
                               f"site 'x' (pyro.sample('x', ..., obs=x)), and no other: compute it without a "
                               f"site, or observe the data as 'x'")
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
    x = trace.nodes["x"]
    if tuple(x["fn"].event_shape) != (x_dim,):
        raise ZooError(f"{name}'s observation 'x' has event shape {tuple(x['fn'].event_shape)}, not ({x_dim},): "
                       f"declare the {x_dim} features one event, e.g. dist.Bernoulli(logits=...).to_event(1)")
    scale = x["scale"]
    if not torch.is_tensor(scale) and abs(float(scale) - _TRIAL_N / _TRIAL_B) > 1e-6:
        raise ZooError(f"{name}'s data plate is not subsampled: a minibatch of {_TRIAL_B} out of N={_TRIAL_N} "
                       f"was scaled by {float(scale):.3g}, not N/B; open it as pyro.plate('data', N, subsample=idx)")
    if not latents:
        raise ZooError(f"{name} has no latent sample site; the zoo fits guides to latents: add one inside "
                       f"pyro.plate('data', N, subsample=idx), e.g. pyro.sample('z', dist.Normal(...).to_event(1))")
    return latents


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
    if site_name == "x" and not any(f.name == "data" for f in frames):
        raise ZooError(f"{name}'s observation 'x' is outside the data plate; observe it inside "
                       f"pyro.plate('data', N, subsample=idx) so minibatches are scaled by N/B")
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
    """Name, event shape and zoo support of one latent, from its distribution's ``support``."""
    event = tuple(int(s) for s in fn.event_shape)
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.real:
        return LatentSite(site_name, event, "real")
    if support is constraints.boolean:
        if len(event) != 1:
            raise ZooError(f"binary latent {site_name!r} has event shape {event}; the zoo's binary latents are "
                           f"vectors of K bits: Bernoulli(logits).to_event(1) with logits of shape (K,), "
                           f"e.g. (1,) for one bit")
        return LatentSite(site_name, event, "binary")
    if support is constraints.one_hot:
        if len(event) != 2:
            raise ZooError(f"categorical latent {site_name!r} has event shape {event}; the zoo's categorical latents "
                           f"are blocks of n one-hot vectors: OneHotCategorical(logits).to_event(1) with logits of "
                           f"shape (n, K), e.g. (1, K) for one variable")
        return LatentSite(site_name, event, "categorical", num_classes=event[-1])
    if _has_bijection(support) and not _is_discrete(support):    # Gamma, LogNormal, Dirichlet, Beta...
        return LatentSite(site_name, event, "real", constraint=support)
    hint = (" use OneHotCategorical (one-hot values) instead of Categorical" if isinstance(
        support, constraints.integer_interval) else " reparameterize it, e.g. sample its log from a Normal")
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


def _split(spec: str) -> Tuple[Path, str]:
    path, _, attr = spec.rpartition(":")
    if not spec.rpartition(":")[0].endswith(".py"):
        raise ZooError(f"model {spec!r}: name the model in the file too, FILE.py:NAME (a Pyro model function, "
                       f"or a factory def NAME(x_dim) that returns one)")
    if not attr.isidentifier():
        raise ZooError(f"model {spec!r}: {attr!r} is not a Python name; give FILE.py:NAME")
    return Path(path), attr


def load_model_file(spec: str, expected_sha256: Optional[str] = None):
    """Import ``FILE.py`` afresh and return ``(its NAME, the file's SHA-256)``; one ZooError for each failure.

    The file is read once; with ``expected_sha256`` those bytes are hashed and compared *before*
    anything in them runs, and the very bytes that were hashed are the ones executed.
    """
    path, attr = _split(spec)
    if not path.is_file():
        raise ZooError(f"model file {str(path)!r} not found (model {spec!r}; relative paths start at "
                       f"{Path.cwd()})")
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ZooError(f"model file {str(path)!r} changed since this run was made (its SHA-256 differs "
                       f"from the run's); nothing in it was run: give the run's own model file, or train a new run")
    module_name = f"pyro_zoo_user_model_{next(_loads)}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module           # dataclasses and the like look their module up while it runs
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SyntaxError as e:
        raise ZooError(f"model file {str(path)!r} has a syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        raise ZooError(f"importing model file {str(path)!r} failed{_user_line(e)}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''}") from None
    finally:
        sys.modules.pop(module_name, None)
    if not hasattr(module, attr):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module_name)
        raise ZooError(f"model file {str(path)!r} has no {attr!r}; it defines: {', '.join(defined) or 'nothing callable'}")
    return getattr(module, attr), digest


def file_sha256(spec: str) -> str:
    """The SHA-256 of the file of a ``FILE.py:NAME`` spec, read without importing it."""
    path, _ = _split(spec)
    if not path.is_file():
        raise ZooError(f"model file {str(path)!r} not found (relative paths start at {Path.cwd()})")
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
    path, attr = _split(spec)
    named = _NAMED_FILES.get()
    if named is not None and spec not in named:
        raise ZooError(f"model {spec!r} is named by a run folder, and the zoo does not import files a run folder "
                       f"names; name the model file on the command line (--model FILE.py:NAME)")
    expected = named.get(spec) if named is not None else None
    stat = path.stat() if path.is_file() else None
    key = (spec, str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size))
    if key not in _COMPONENTS or (expected is not None and _DIGESTS[key] != expected):
        obj, digest = load_model_file(spec, expected_sha256=expected)
        if not callable(obj):
            raise ZooError(f"{attr!r} in {str(path)!r} is a {type(obj).__name__}, not a Pyro model function or factory")
        description = (inspect.getdoc(obj) or f"Pyro model {attr} from {path}").split("\n")[0]
        _COMPONENTS[key] = Component("model", spec, lambda x_dim, **options: _build_from_file(spec, x_dim, **options),
                                     ModelFileOptions, description,
                                     {"pinned_options": lambda: {"source_sha256": digest}})
        _DIGESTS[key] = digest
    return _COMPONENTS[key]


MODELS.add_resolver(resolve_model_file)
