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

import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pyro.poutine as poutine
import torch
from torch import nn

from guides.base import ZooGuide
from guides.globals import GlobalGuideOptions
from zoo.core.contract import SUPPORTS, ZooModel
from zoo.core.errors import ZooError
from zoo.core.params import register_module
from zoo.core.components import GUIDES, Component
from zoo.core.weights import is_subsample_site, per_datum_log_weights, vectorize
from zoo.usercode.errors import call_user
from zoo.usercode.functions import first_parameter, named_modules, takes_argument
from zoo.usercode.loading import FileOptions, UserFile, load_user_file, make_component
from zoo.usercode.messengers import OwnParameters, call_owned
from zoo.usercode.params import UserParameters, claim_parameters
from zoo.usercode.specs import is_file_spec
from zoo.usercode.supports import same_support, support_name
from zoo.usercode.trace import TRIAL_B, TRIAL_N, TRIAL_PARTICLES, plate_violation, trial_rows

__all__ = ["UserGuide", "from_pyro_guide", "as_zoo_guide", "resolve_guide_file"]


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
    :func:`from_pyro_guide`, the same wrapper each time for the same function and model, on the model's device."""
    if isinstance(guide, nn.Module):
        return guide
    if not callable(guide):
        raise ZooError(f"a guide must be a zoo guide (zoo.build_guide) or a Pyro guide function "
                       f"guide(x, idx=None, N=None), got {type(guide).__name__}")
    key = id(getattr(guide, "__func__", guide)), id(getattr(guide, "__self__", None))
    cache = _WRAPPED.setdefault(model, {})
    if key not in cache:
        cache[key] = from_pyro_guide(guide, model, num_data=num_data).to(model.device)
    return cache[key]


class UserGuide(ZooGuide, UserParameters):
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
        argument = first_parameter(guide)
        if argument in ("model", "x_dim"):                 # a factory (a class: its __init__)
            extra = {"num_data": num_data} if takes_argument(guide, "num_data") else {}
            guide = self._call_user(lambda: guide(model if argument == "model" else model.x_dim, **extra),
                                    f"building the guide from {argument}")
            if not callable(guide):
                raise ZooError(f"{self._name}({argument}) is a factory (its first argument is {argument}) and returned "
                               f"{'None' if guide is None else 'a ' + type(guide).__name__}, not a guide; end it "
                               f"with 'return guide', the guide function (or nn.Module) it builds")
        owner = guide if isinstance(guide, nn.Module) else getattr(guide, "__self__", None)
        if isinstance(owner, nn.Module):
            self.user = owner
            method = getattr(owner, "guide", None)
            self._fn = method if callable(method) else owner
        elif callable(guide):
            self._fn = guide
            found = named_modules(guide)
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
        self.init_parameter_sites()
        self.device_anchor = self.device_anchor.to(model.device)    # the trial runs on the model's device
        self._lent = {id(p): p for p in model.parameters()}     # pyro.module on the model's networks: theirs
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
        # every parameter the guide owns (q(theta)'s, the networks it names) is a param site, so Pyro's ELBOs
        # differentiate the loss even where neither the model nor the guide function names a parameter
        register_module("user_guide", self)
        if self._with_globals:
            self.sample_globals()     # q(theta), the zoo's global guide, outside the data plate: theta_hat for the harness
        return call_owned(self, self._fn, x, idx, N, _GuideParameters(self))

    def __deepcopy__(self, memo):
        raise ZooError(f"{self._name} wraps a Pyro function that holds its own networks, so it cannot be "
                       f"deep-copied; build another from a factory and load_state_dict into it")

    # -- the trial run -------------------------------------------------------------------
    def _trial(self, model: ZooModel) -> bool:
        """Run the guide on a trial minibatch, alone and under two particles; check it against the model's
        latents (names, plate, shapes, supports); return whether every site is reparameterizable."""
        x = trial_rows(model.example_rows, model.x_dim, model.device)
        idx = torch.arange(TRIAL_B, device=x.device)
        with torch.random.fork_rng(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.adopting, self._with_globals = True, False         # the user's own sites alone first
            try:
                trace = self._call_user(lambda: poutine.trace(self).get_trace(x, idx=idx, N=TRIAL_N),
                                        "on a trial minibatch")
            finally:
                self.adopting, self._with_globals = False, True
            prior = poutine.trace(model.model).get_trace(x, idx=idx, N=TRIAL_N)
            sites = self._check_sites(trace, prior, model, batch=(TRIAL_B,))
            vectorized = self._call_user(lambda: poutine.trace(vectorize(self, TRIAL_PARTICLES)).get_trace(
                x, idx=idx, N=TRIAL_N), f"under a plate of {TRIAL_PARTICLES} particles left of the data plate (as the "
                                         f"harness and the multi-sample objectives run it)")
            self._check_sites(vectorized, prior, model, batch=(TRIAL_PARTICLES, TRIAL_B))
            self._call_user(lambda: per_datum_log_weights(model.model, self, x, idx=idx, N=TRIAL_N,
                                                          num_particles=TRIAL_PARTICLES),
                            f"when {model.display_name} scored its {TRIAL_PARTICLES} particles")
        return all(bool(s["fn"].has_rsample) for s in sites.values())

    def _check_sites(self, trace, prior, model: ZooModel, batch: Tuple[int, ...]) -> Dict:
        """The guide's sample sites, each checked against the model's latent of that name."""
        name, latents = self._name, {s.name: s for s in model.latents}
        sites = {n: s for n, s in trace.nodes.items() if s["type"] == "sample" and not is_subsample_site(s)}
        listed = ", ".join(repr(s) for s in latents)
        global_names = {s.name for s in model.global_latents}
        if batch != (TRIAL_B,):        # the vectorized trace also holds the zoo's global guide's sites
            sites = {n: s for n, s in sites.items() if n not in global_names}
        for site_name, site in sites.items():
            if site_name in global_names:
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
            frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.name != "particles"]
            if not any(f.name == "data" for f in frames):
                raise ZooError(f"guide {name}'s site {site_name!r} is outside the data plate; "
                               f"{model.display_name}'s latent {site_name!r} is one per datum, so q must be too: "
                               f"sample it inside pyro.plate('data', N, subsample=idx)")
            broken = plate_violation(frames)          # the model's plate rules, on the guide's site
            if broken is not None:
                rule, f = broken
                if rule == "plate":
                    raise ZooError(f"guide {name}'s site {site_name!r} is inside plate {f.name!r}; "
                                   f"{model.display_name}'s latent {site_name!r} is one per datum, in the data plate "
                                   f"only: declare per-datum dimensions an event with .to_event(1)")
                raise ZooError(f"guide {name}'s data plate is not the model's: a minibatch of {TRIAL_B} out of "
                               f"N={TRIAL_N} gave a plate of size {f.size} at dim {f.dim}; open it as "
                               f"pyro.plate('data', N, subsample=idx)")
            event, expected = tuple(site["fn"].event_shape), tuple(model_site["fn"].event_shape)
            if event != expected:
                raise ZooError(f"guide {name}'s site {site_name!r} has event shape {event}, and "
                               f"{model.display_name}'s latent has {expected}; one datum's value must be one event "
                               f"of that shape: e.g. dist.Normal(loc, scale).to_event({len(expected)})")
            if tuple(site["fn"].batch_shape) != batch:
                raise ZooError(f"guide {name}'s site {site_name!r} has batch shape {tuple(site['fn'].batch_shape)}, "
                               f"not {batch}, on a minibatch of {TRIAL_B}"
                               f"{f' under {TRIAL_PARTICLES} particles' if len(batch) > 1 else ''}; compute its "
                               f"parameters from x (or index tables with idx) and let the plates broadcast, without "
                               f"fixed sizes such as x.shape[0]")
            if not same_support(site["fn"].support, model_site["fn"].support):
                raise ZooError(f"guide {name}'s site {site_name!r} has support {support_name(site['fn'].support)}, "
                               f"and {model.display_name}'s latent {site_name!r} has "
                               f"{support_name(model_site['fn'].support)}; q must propose values the model can score: "
                               f"use a distribution with that support")
        return sites

    def _call_user(self, run: Callable, what: str):
        """``run()``; an error in the user's code becomes one line naming the guide, the file and the line."""
        return call_user(run, f"guide {self._name}", what, "the zoo calls guide(x, idx=idx, N=N) with a minibatch "
                                                            "x [B, D] of N data")

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
        claim_parameters(self, "guide", f"guide {self._name}'s networks already belong to another zoo {{}}; build "
                                        f"fresh ones for each: give a factory, def make(model): ... return guide",
                         others=("guide", "model"))


class _GuideParameters(OwnParameters):
    """The guide's own parameters, as a model's (:class:`~zoo.usercode.messengers.OwnParameters`), except
    that ``pyro.module`` on the model's networks (a guide that computes with them) gets the model's tensors:
    the guide borrows them, and they stay out of its ``state_dict`` and its optimizer group."""

    def _pyro_param(self, msg):
        init = msg["args"][1] if len(msg["args"]) > 1 else None
        guide = self.owner
        if msg["name"] not in guide.param_sites and isinstance(init, nn.Parameter) and id(init) in guide._lent:
            guide.borrows_model = True
            msg["value"] = init
            msg["done"] = True
            return
        super()._pyro_param(msg)


# -- guide files: the CLI's --guide FILE.py:NAME ------------------------------------------------
@dataclass
class GuideFileOptions(FileOptions, GlobalGuideOptions):
    """The options of a guide file: its fingerprint, recorded in the run's config, and the guide of global latents."""


class GuideFile(UserGuide):
    """A guide from a ``FILE.py:NAME``; each file gets its own subclass (:func:`resolve_guide_file`),
    whose class attributes are what the registry reads before a guide is built."""

    spec: str = ""
    digest: str = ""

    def __init__(self, model: ZooModel, num_data: Optional[int] = None, source_sha256: Optional[str] = None,
                 global_guide: Optional[str] = None):
        # the file is imported afresh for each guide (fresh module-level networks), and only if its bytes
        # are the ones the registry resolved (and, for a run, the ones the run was made with)
        obj, _ = load_user_file(self.spec, expected_sha256=source_sha256 or self.digest, kind="guide")
        super().__init__(model, obj, num_data=num_data, name=self.family, global_guide=global_guide)

    @classmethod
    def is_reparameterized(cls, model: ZooModel) -> bool:
        """Read off a trial guide for ``model`` (the file's sites decide, not the model's supports)."""
        known = cls._probed.get(model)
        if known is None:
            known = cls._probed[model] = cls(model).reparameterized
        return known


def _guide_file_class(file: UserFile) -> type:
    """The :class:`GuideFile` subclass of one guide file."""
    return type(f"GuideFile_{file.name}", (GuideFile,), {
        "spec": file.spec, "digest": file.digest, "family": file.name, "__module__": __name__,
        "__doc__": file.description, "amortized": bool(getattr(file.obj, "amortized", True)),
        "_probed": weakref.WeakKeyDictionary()})


def resolve_guide_file(spec: str) -> Optional[Component]:
    """The registry entry of a ``FILE.py:NAME`` guide (the file is imported once here, to fail early)."""
    if not is_file_spec(spec):
        return None
    return make_component(spec, "guide", GuideFileOptions, _guide_file_class)


GUIDES.add_resolver(resolve_guide_file)
