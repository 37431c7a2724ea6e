"""Your own Pyro guide as a zoo guide: :func:`from_pyro_guide`, and ``--guide FILE.py:NAME``.

A guide written by hand joins the harness, the objectives, ``compare`` and ``gradients`` beside
the zoo's families if it keeps the guide side of the contract of :mod:`zoo.core.contract`::

    def my_guide(x, idx=None, N=None):
        pyro.module("encoder", encoder)                    # or pyro.param("w", init)
        with pyro.plate("data", N, subsample=idx):         # every latent of the model in here
            loc, log_scale = encoder(x)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

It defines q(z | x) = prod_n q(z_n | x_n), one factor per datum inside the subsampled data plate,
so the harness can form each datum's importance weights
log w_n = log p(x_n, z_n) - log q(z_n | x_n) (:mod:`zoo.core.weights`) with the same code that
scores the zoo's own guides.

**What may be given.** A guide function ``guide(x, idx=None, N=None)``; an ``nn.Module`` with
a ``guide`` method (else its ``forward`` is the guide); or a *factory* that builds one with fresh
networks: a callable whose first parameter is named ``model`` (it receives the zoo model, whose
``latents`` and ``x_dim`` say what to build) or ``x_dim`` (it receives the data dimension D), and
which also receives ``num_data=N`` if it has a parameter of that name (a per-datum guide sizes
its tables with it). An ``nn.Module`` class whose ``__init__`` takes ``model`` or ``x_dim``
first is a factory. A guide object that sets ``amortized = False`` (a per-datum guide, whose
parameters are tables indexed by ``idx``) is refitted to new data as the ``meanfield`` family is.

**Checked on a trial run** (each refused in one line that names the site and what to do):
the guide runs once on a minibatch of 3 out of N = 7 and once more under a plate of two
particles left of the data plate (:func:`zoo.core.weights.vectorize`: the harness and the
multi-sample objectives vectorize that way). Every local latent of the model must be sampled, and
no other site (an unknown name is named, with the model's latents); each inside
``pyro.plate("data", N, subsample=idx)`` at dim -1 and in no other plate, with batch shape ``(B,)``
(``(2, B)`` under the particles) and the event shape and support of the model's site; then the
model scores the guide's two particles. A guide's own error names its file and line.

**Global latents** (a model's sites outside the data plate, ``model.global_latents``) are proposed by
the zoo's global guide (:mod:`guides.globals`, ``global_guide="normal"`` or ``"delta"``,
``--global-guide``), sampled before your guide runs, so the harness can hold them at its stated point
estimate theta_hat as it does for every family. Your guide proposes the local latents only; one that
samples a global site is refused in one line.

**Parameters become the guide's own**, as :func:`zoo.from_pyro` makes a model's: ``nn.Module``
objects the guide function names (closure variables, module globals) become sub-modules, and
``pyro.param`` sites become ``nn.Parameter`` values holding the unconstrained value, so the
optimizer, ``state_dict``, checkpoints and ``.to(device)`` see them; Pyro's global param store is
never read or written. The model itself, or a network it owns, named by the guide (an exact
posterior computed from the model's weights) is *borrowed*: the guide computes with it but does not
own it, so its parameters are trained once, as the model's, and the guide declares
``borrows_model`` (estimators that need disjoint parameters refuse it).

Example::

    >>> import pyro, pyro.distributions as dist, torch, zoo
    >>> model = zoo.build_model("ppca", x_dim=5, latent_dim=2)
    >>> def my_guide(model):                  # a factory: fresh networks for each guide
    ...     encoder = torch.nn.Linear(model.x_dim, 4)
    ...     def guide(x, idx=None, N=None):
    ...         with pyro.plate("data", N, subsample=idx):
    ...             loc, s = encoder(x).chunk(2, -1)
    ...             pyro.sample("z", dist.Normal(loc, s.exp()).to_event(1))
    ...     return guide
    >>> g = from_pyro_guide(my_guide, model)
    >>> sorted(g.state_dict()), g.reparameterized
    (['networks.encoder.bias', 'networks.encoder.weight'], True)

On the command line a guide file is ``FILE.py:NAME`` wherever a guide is named:
``pyro-zoo compare ppca --guides amortized,my_guides.py:my_guide --objectives elbo,iwae``. A run
trained with one records the file's absolute path and SHA-256 and, like a model file, is never
imported from a run folder: ``pyro-zoo eval RUN --guide my_guides.py:my_guide`` names it again,
and a changed file is refused before it runs.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import pyro.poutine as poutine
import torch
from torch import nn
from torch.distributions import constraints

from guides.base import ZooGuide
from guides.globals import GlobalGuideOptions
from zoo.core.contract import SUPPORTS, ZooModel
from zoo.core.errors import ZooError
from zoo.core.params import register_module
from zoo.core.components import GUIDES, Component, Options, option
from zoo.core.weights import per_datum_log_weights, vectorize
from zoo.models.pyro_model import (_FROZEN_WARNING, _OWNER, _OwnParameters, PyroModel, claim_parameters,
                                   _is_plate_site, _named_modules, _split, _support_name, _user_line, is_model_file,
                                   load_model_file, resolve_file)

__all__ = ["UserGuide", "from_pyro_guide", "as_zoo_guide", "resolve_guide_file"]

#: The trial run's minibatch: B rows out of N (as the model's trial), and the particles of the vectorized run.
_TRIAL_B, _TRIAL_N, _TRIAL_K = 3, 7, 2

#: The attribute of a parameter that names (weakly) the UserGuide owning it: two guides never share one.
_GUIDE_OWNER = "_pyro_zoo_guide_owner"


def from_pyro_guide(guide, model: ZooModel, num_data: Optional[int] = None,
                    name: Optional[str] = None, global_guide: Optional[str] = None) -> "UserGuide":
    """Wrap an ordinary Pyro guide for ``model`` (see the module docstring for what it must keep).

    Arguments:
        guide: a guide function ``guide(x, idx=None, N=None)``, an ``nn.Module`` with a ``guide``
            method (or ``forward``), or a factory whose first parameter is ``model`` or ``x_dim``.
        model: the zoo model the guide is for (its latents are what the guide must sample).
        num_data: N, for a factory that takes ``num_data`` (a per-datum guide's tables).
        name: the guide's name in messages and tables (default: the function's name).
        global_guide: for a model with global latents, the zoo's guide of them, ``"normal"`` (default) or
            ``"delta"`` (:mod:`guides.globals`); the guide given proposes the local latents only.
    """
    return UserGuide(model, guide, num_data=num_data, name=name, global_guide=global_guide)


#: model -> {id(user guide object): its UserGuide}: a function given to zoo.fit and then zoo.evaluate
#: is wrapped once, so evaluate scores the parameters fit trained (its pyro.param sites live in the wrapper).
_WRAPPED: "weakref.WeakKeyDictionary[ZooModel, Dict[int, UserGuide]]" = weakref.WeakKeyDictionary()


def as_zoo_guide(guide, model: ZooModel, num_data: Optional[int] = None):
    """``guide`` as the harness, ``zoo.fit`` and ``gradients`` take it: an ``nn.Module`` as it is (a zoo
    guide, or a module the caller vouches for), a plain function (or bound method) wrapped by
    :func:`from_pyro_guide`, the same wrapper each time for the same function and model."""
    if isinstance(guide, nn.Module):
        return guide
    if not callable(guide):
        raise ZooError(f"a guide must be a zoo guide (zoo.build_guide) or a Pyro guide function "
                       f"guide(x, idx=None, N=None), got {type(guide).__name__}")
    key = id(getattr(guide, "__func__", guide)), id(getattr(guide, "__self__", None))
    cache = _WRAPPED.setdefault(model, {})
    if key not in cache:
        cache[key] = from_pyro_guide(guide, model, num_data=num_data)
    return cache[key]


def _factory_argument(obj) -> Optional[str]:
    """``"model"`` or ``"x_dim"``: the first parameter of a guide factory (a class: its ``__init__``'s); else None."""
    if not callable(obj) or isinstance(obj, nn.Module):
        return None
    try:
        params = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None
    return params[0] if params and params[0] in ("model", "x_dim") else None


def _takes(obj, argument: str) -> bool:
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return argument in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class UserGuide(ZooGuide):
    """A user's Pyro guide under the zoo contract; made by :func:`from_pyro_guide`.

    Attributes:
        networks: the ``nn.Module`` objects the guide function names (closure or globals).
        user: the user's ``nn.Module`` when the guide is its method.
        params: ``pyro.param`` values (unconstrained) and adopted ``pyro.module`` parameters.
        reparameterized: every site the guide samples has ``rsample`` (read off the trial run).
    """

    family = "user"
    supports = SUPPORTS
    normal_sites = False             # log q at detached parameters (stl, dreg) is not known to work for any q
    enumerable = False

    def __init__(self, model: ZooModel, guide, num_data: Optional[int] = None, name: Optional[str] = None,
                 global_guide: Optional[str] = None):
        super().__init__(model, num_data, global_guide=global_guide)
        self._with_globals = True
        self._name = name or getattr(guide, "__name__", None) or type(guide).__name__
        if model.borrows_guide:
            raise ZooError(f"{model.display_name} computes with its guide's encoder (e.g. a VampPrior), which a "
                           f"guide of your own does not have; use a zoo guide (amortized) or another --prior")
        argument = _factory_argument(guide)
        if argument is not None:
            extra = {"num_data": num_data} if _takes(guide, "num_data") else {}
            guide = self._call_user(lambda: guide(model if argument == "model" else model.x_dim, **extra),
                                    f"building the guide from {argument}")
        owner = guide if isinstance(guide, nn.Module) else getattr(guide, "__self__", None)
        if isinstance(owner, nn.Module):
            self.user = owner
            method = getattr(owner, "guide", None)
            self._fn = method if callable(method) else owner
        elif callable(guide):
            self._fn = guide
            found = _named_modules(guide)
            model_ids = {id(p) for p in model.parameters()}
            lent = {k: m for k, m in found.items()
                    if m is model or (any(True for _ in m.parameters()) and all(id(p) in model_ids for p in m.parameters()))}
            if lent:                  # the model's own networks: computed with, not owned (an exact posterior)
                self.borrows_model = True
            found = {k: m for k, m in found.items() if k not in lent}
            if found:
                self.networks = nn.ModuleDict(found)
        else:
            raise ZooError(f"{self._name} is a {type(guide).__name__}, not a Pyro guide function guide(x, idx=None, "
                           f"N=None), an nn.Module with a guide method, or a factory def make(model)")
        self.amortized = bool(getattr(owner if owner is not None else guide, "amortized", True))
        self.params = nn.ParameterDict()
        self._sites: Dict[str, Tuple[str, constraints.Constraint]] = {}
        self._lent = {id(p): p for p in model.parameters()}     # pyro.module on the model's networks: theirs
        self._adopting = False
        self._refuse_model_parameters(model)
        self.reparameterized = self._trial(model)
        self._claim_parameters()

    # -- the contract ----------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self._name

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def forward(self, x=None, idx=None, N=None):
        if x is not None:
            if idx is None:
                idx = torch.arange(x.shape[0], device=x.device)
            N = x.shape[0] if N is None else N
        device = self.device
        # every parameter the guide owns (q(theta)'s, the networks it names) is a param site, so Pyro's ELBOs
        # differentiate the loss even where neither the model nor the guide function names a parameter
        register_module("user_guide", self)
        if self._with_globals:
            self.sample_globals()     # q(theta), the zoo's global guide, outside the data plate: theta_hat for the harness
        with _GuideParameters(self), (torch.device(device) if device.type != "cpu" else contextlib.nullcontext()):
            if self.training:
                return self._fn(x, idx=idx, N=int(N))
            with warnings.catch_warnings():       # pyro.module on a frozen network (a refit) warns
                warnings.filterwarnings("ignore", message=_FROZEN_WARNING)
                return self._fn(x, idx=idx, N=int(N))

    def __deepcopy__(self, memo):
        raise ZooError(f"{self._name} wraps a Pyro function that holds its own networks, so it cannot be "
                       f"deep-copied; build another from a factory and load_state_dict into it")

    # the same adoption of param sites as a model's (zoo.models.pyro_model): one rule for both sides
    _adopt = PyroModel._adopt

    # -- the trial run -------------------------------------------------------------------
    def _trial(self, model: ZooModel) -> bool:
        """Run the guide on a trial minibatch, alone and under two particles; check it against the model's
        latents (names, plate, shapes, supports); return whether every site is reparameterizable."""
        x = torch.zeros(_TRIAL_B, model.x_dim, device=model.device)
        idx = torch.arange(_TRIAL_B, device=x.device)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._adopting, self._with_globals = True, False        # the user's own sites alone first
            try:
                trace = self._call_user(lambda: poutine.trace(self).get_trace(x, idx=idx, N=_TRIAL_N),
                                        "on a trial minibatch")
            finally:
                self._adopting, self._with_globals = False, True
            prior = poutine.trace(model.model).get_trace(x, idx=idx, N=_TRIAL_N)
            sites = self._check_sites(trace, prior, model, batch=(_TRIAL_B,))
            vectorized = self._call_user(lambda: poutine.trace(vectorize(self, _TRIAL_K)).get_trace(
                x, idx=idx, N=_TRIAL_N), f"under a plate of {_TRIAL_K} particles left of the data plate (as the "
                                         f"harness and the multi-sample objectives run it)")
            self._check_sites(vectorized, prior, model, batch=(_TRIAL_K, _TRIAL_B))
            self._call_user(lambda: per_datum_log_weights(model.model, self, x, idx=idx, N=_TRIAL_N,
                                                          num_particles=_TRIAL_K),
                            f"when {model.display_name} scored its {_TRIAL_K} particles")
        return all(bool(s["fn"].has_rsample) for s in sites.values())

    def _check_sites(self, trace, prior, model: ZooModel, batch: Tuple[int, ...]) -> Dict:
        """The guide's sample sites, each checked against the model's latent of that name."""
        name, latents = self._name, {s.name: s for s in model.latents}
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not _is_plate_site(s)}
        listed = ", ".join(repr(s) for s in latents)
        global_names = {s.name for s in getattr(model, "global_latents", ())}
        sites = {n: s for n, s in sites.items() if n not in global_names or batch == (_TRIAL_B,)}
        for site_name, site in sites.items():
            if site_name in global_names and batch == (_TRIAL_B,):
                raise ZooError(f"guide {name} samples {site_name!r}, a global latent of {model.display_name} (outside "
                               f"the data plate), which the zoo's global guide proposes (--global-guide normal or "
                               f"delta; the harness reports figures at its point estimate); sample only the local "
                               f"latents ({listed}) in your guide")
            if site["is_observed"]:
                raise ZooError(f"guide {name}'s site {site_name!r} is observed; a guide samples the model's latents "
                               f"({listed}) and observes nothing: drop its obs=")
            if site_name not in latents:
                raise ZooError(f"guide {name} samples {site_name!r}, which is not a latent of {model.display_name} "
                               f"(its latents: {listed}); name each guide site after the model's latent it proposes")
        missing = [n for n in latents if n not in sites]
        if missing:
            raise ZooError(f"guide {name} does not sample {model.display_name}'s latent {missing[0]!r}"
                           f"{f' (nor {missing[1:]})' if len(missing) > 1 else ''}; a guide proposes every latent: add "
                           f"pyro.sample({missing[0]!r}, ...) inside pyro.plate('data', N, subsample=idx)")
        for site_name, site in sites.items():
            model_site = prior.nodes[site_name]
            local = getattr(latents[site_name], "scope", "local") != "global"
            frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != "particles"]
            if local and not any(f.name == "data" for f in frames):
                raise ZooError(f"guide {name}'s site {site_name!r} is outside the data plate; "
                               f"{model.display_name}'s latent {site_name!r} is one per datum, so q must be too: "
                               f"sample it inside pyro.plate('data', N, subsample=idx)")
            for f in frames:
                if f.name != "data" or not local:
                    raise ZooError(f"guide {name}'s site {site_name!r} is inside plate {f.name!r}; "
                                   f"{model.display_name}'s latent {site_name!r} is "
                                   f"{'one per datum, in the data plate only' if local else 'global, in no plate'}: "
                                   f"{'declare per-datum dimensions an event with .to_event(1)' if local else 'sample it outside every plate'}")
                if f.size != _TRIAL_B or f.dim != -1:
                    raise ZooError(f"guide {name}'s data plate is not the model's: a minibatch of {_TRIAL_B} out of "
                                   f"N={_TRIAL_N} gave a plate of size {f.size} at dim {f.dim}; open it as "
                                   f"pyro.plate('data', N, subsample=idx)")
            event, expected = tuple(site["fn"].event_shape), tuple(model_site["fn"].event_shape)
            if event != expected:
                raise ZooError(f"guide {name}'s site {site_name!r} has event shape {event}, and "
                               f"{model.display_name}'s latent has {expected}; one datum's value must be one event "
                               f"of that shape: e.g. dist.Normal(loc, scale).to_event({len(expected)})")
            want = batch if local else batch[:-1]
            if tuple(site["fn"].batch_shape) != want:
                raise ZooError(f"guide {name}'s site {site_name!r} has batch shape {tuple(site['fn'].batch_shape)}, "
                               f"not {want}, on a minibatch of {_TRIAL_B}"
                               f"{f' under {_TRIAL_K} particles' if len(batch) > 1 else ''}; compute its parameters "
                               f"from x (or index tables with idx) and let the plates broadcast, without fixed "
                               f"sizes such as x.shape[0]")
            if not _same_support(site["fn"].support, model_site["fn"].support):
                raise ZooError(f"guide {name}'s site {site_name!r} has support {_support_name(site['fn'].support)}, "
                               f"and {model.display_name}'s latent {site_name!r} has "
                               f"{_support_name(model_site['fn'].support)}; q must propose values the model can score: "
                               f"use a distribution with that support")
        return sites

    def _call_user(self, run: Callable, what: str):
        """``run()``; an error in the user's code becomes one line naming the guide, the file and the line."""
        try:
            return run()
        except ZooError:
            raise
        except Exception as e:
            where = _user_line(e)
            text = str(e).splitlines()[0] if str(e) else ""
            if "Shape mismatch inside plate('data')" in text:
                raise ZooError(f"guide {self._name}{where}: {text}; inside pyro.plate('data', ...) a datum's "
                               f"value must be one event: add .to_event(1) to its distribution") from None
            raise ZooError(f"guide {self._name} failed {what}{where}: {type(e).__name__}: {text}; the zoo calls "
                           f"guide(x, idx=idx, N=N) with a minibatch x [B, D] of N data") from None

    # -- ownership ------------------------------------------------------------------------
    def _refuse_model_parameters(self, model: ZooModel) -> None:
        ours = {id(p) for p in self.parameters()}
        shared = [n for n, p in model.named_parameters() if id(p) in ours]
        if shared:
            raise ZooError(f"guide {self._name} holds a network that mixes the model's parameters ({shared[0]}) with "
                           f"its own; name the model's networks and the guide's apart (the guide borrows the model's, "
                           f"and owns only its own)")

    def _claim_parameters(self) -> None:
        """Mark every parameter as this guide's; refuse one that a live zoo guide or model already holds."""
        claim_parameters(self, _GUIDE_OWNER, {_GUIDE_OWNER: "guide", _OWNER: "model"},
                         f"guide {self._name}'s networks already belong to another zoo {{}}; build fresh ones for "
                         f"each: give a factory, def make(model): ... return guide")


class _GuideParameters(_OwnParameters):
    """The guide's own parameters, as a model's (:class:`~zoo.models.pyro_model._OwnParameters`), except
    that ``pyro.module`` on the model's networks (a guide that computes with them) gets the model's tensors:
    the guide borrows them, and they stay out of its ``state_dict`` and its optimizer group."""

    def _pyro_param(self, msg):
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        if msg["name"] not in self.model._sites and isinstance(init, nn.Parameter) and id(init) in self.model._lent:
            self.model.borrows_model = True
            msg["value"] = init
            msg["done"] = True
            return
        super()._pyro_param(msg)


def _same_support(a, b) -> bool:
    """Whether two constraints are the same support (``independent`` wrappers aside)."""
    while isinstance(a, constraints.independent):
        a = a.base_constraint
    while isinstance(b, constraints.independent):
        b = b.base_constraint
    return a is b or (type(a) is type(b) and vars(a) == vars(b))


# -- guide files: the CLI's --guide FILE.py:NAME ------------------------------------------------
@dataclass
class GuideFileOptions(GlobalGuideOptions):
    """The one option of a guide file: its fingerprint, recorded in the run's config."""

    source_sha256: Optional[str] = option(None, "SHA-256 of the guide file when the run was made; a resumed or "
                                          "re-evaluated run refuses a changed file", cli=False)


class GuideFile(UserGuide):
    """A guide from a ``FILE.py:NAME``; each file gets its own subclass (:func:`resolve_guide_file`),
    whose class attributes are what the registry reads before a guide is built."""

    spec: str = ""
    digest: str = ""

    def __init__(self, model: ZooModel, num_data: Optional[int] = None, source_sha256: Optional[str] = None,
                 global_guide: Optional[str] = None):
        # the file is imported afresh for each guide (fresh module-level networks), and only if its bytes
        # are the ones the registry resolved (and, for a run, the ones the run was made with)
        obj, _ = load_model_file(self.spec, expected_sha256=source_sha256 or self.digest, kind="guide")
        super().__init__(model, obj, num_data=num_data, name=self.family, global_guide=global_guide)

    @classmethod
    def is_reparameterized(cls, model: ZooModel) -> bool:
        """Read off a trial guide for ``model`` (the file's sites decide, not the model's supports)."""
        known = cls._probed.get(model)
        if known is None:
            known = cls._probed[model] = cls(model).reparameterized
        return known


def resolve_guide_file(spec: str) -> Optional[Component]:
    """The registry entry of a ``FILE.py:NAME`` guide (the file is imported once here, to fail early)."""
    if not is_model_file(spec):
        return None

    def component(obj, digest: str, path: Path, attr: str) -> Component:
        if not callable(obj):
            raise ZooError(f"{attr!r} in {str(path)!r} is a {type(obj).__name__}, not a Pyro guide function or factory")
        description = (inspect.getdoc(obj) or f"Pyro guide {attr} from {path}").split("\n")[0]
        cls = type(f"GuideFile_{attr}", (GuideFile,), {
            "spec": spec, "digest": digest, "family": attr, "__module__": __name__, "__doc__": description,
            "amortized": bool(getattr(obj, "amortized", True)), "_probed": weakref.WeakKeyDictionary()})
        return Component("guide", spec, cls, GuideFileOptions, description,
                         {"pinned_options": lambda: {"source_sha256": digest}})
    return resolve_file(spec, "guide", component)


GUIDES.add_resolver(resolve_guide_file)
