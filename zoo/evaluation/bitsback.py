"""Lossless compression with a trained latent variable model: bits-back coding with ANS (BB-ANS).

Townsend, Bird and Barber's BB-ANS codes each datum x with a latent z through one stack of an
asymmetric numeral system (``constriction``'s ``AnsCoder``)::

    encode x:  pop z ~ q(z | x)   (decode with the posterior: the "bits back")
               push x with p(x | z)
               push z with p(z)
    decode:    pop z with p(z), pop x with p(x | z), push z with q(z | x)

so each datum costs -log p(x | z) - log p(z) + log q(z | x) bits in expectation: the negative ELBO. The
code for the whole split is the chain of these steps, one datum after the other, and decoding runs it
backwards from the last datum to the first.

What is coded, per site (read off a trace of the model and of the guide, so no model is named here):

The latents are popped from q in the model's order (top layer first) so that each layer's bins, which
depend on its prior given the layer above, are known when it is popped; a mean-field guide allows that
order, a structured (bottom-up) one is refused.

- a **real latent** with a diagonal Normal prior p(z_u | parents) = N(m_u, s_u^2) and a diagonal Normal
  posterior is discretized as the paper does: 2^b bins of equal prior mass per unit (edges
  m_u + s_u Phi^-1(i / 2^b)), so the prior of a bin is exactly 2^-b (a uniform symbol), the posterior
  of bin i is Phi((e_i+1 - mu_u) / sigma_u) - Phi((e_i - mu_u) / sigma_u), and the value is the bin's
  prior-median centre m_u + s_u Phi^-1((i + 1/2) / 2^b). A hierarchy (hvae) discretizes each layer under
  its conditional prior given the layer above's centres (the follow-up of Kingma et al. 2019).
- a **binary or categorical latent** (sbn, categorical_vae) is coded as it is, with its own probabilities:
  no discretization.
- the **pixels**: p(x | z) must factor over pixels, each a distribution over its levels {0, ..., k-1}
  (Bernoulli: k = 2; :mod:`zoo.core.levels`: k); its log_prob over the enumerated levels
  (:func:`~zoo.core.levels.pixel_levels_table`) is each pixel's categorical. The pixels are the columns of
  x that the model observes (:func:`coded_sites`): the site ``"x"``, or each observed site of a model
  file in turn, with the columns it holds.
- **covariates** (columns of x no site observes: ``--covariates``, a regression's features) are side
  information, not coded: encoder and decoder are both given them, and each datum costs
  -log p(x | z, c) - log p(z | c) + log q(z | x, c) bits. The model is then called as it is when scoring
  (the only call a model with covariates must support), on a row that holds the covariates and level 0
  in every coded column (a value of every pixel's support): only the sites' distributions are read, so
  encoder and decoder compute the same floats (:meth:`BitsBackCoder.side_row`).

The chain starts from a few fixed pseudo-random words (craystack's "initial bits"), so the first datum's
z is popped from bits that follow q(z | x), not from an empty stack (which would hand it the lowest bin of
every unit and make its x expensive); they stay in the message and are counted in its length, and the
decoder ends with exactly these words on the stack, one more check that the code was whole.

Every probability is quantized by ``constriction`` to 24-bit fixed point, with every symbol given at least
one quantum ("leaky"), so a symbol of probability 0 in float still has a code. Encoder and decoder compute
the same floats: each datum's networks run on a batch of one, in the same order, in float64 after the
network.

References:
    J. Townsend, T. Bird and D. Barber, "Practical Lossless Compression with Latent Variables using Bits
    Back Coding", ICLR 2019, https://arxiv.org/abs/1901.04866 (and its craystack code).
    F. Kingma, P. Abbeel and J. Ho, "Bit-Swap: Recursive Bits-Back Coding for Lossless Compression with
    Hierarchical Latent Variables", ICML 2019, https://arxiv.org/abs/1905.06845.
    R. Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS)", 2022 (constriction).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from scipy.special import ndtr, ndtri

from zoo.core.errors import ZooError
from zoo.core.levels import levels_of, pixel_levels_table
from zoo.core.modes import evaluation_mode
from zoo.core.distributions import StandardNormal
from zoo.rules import COMPRESS_NEEDS_NORMAL, check_compress, compress_levels

__all__ = ["BitsBackCoder", "coded_sites", "PRECISION_BITS", "DEFAULT_LATENT_BITS", "MAX_LATENT_BITS"]

#: constriction's default fixed-point precision of a probability in the AnsCoder (24 bits).
PRECISION_BITS = 24
#: Bins per real latent unit: 2^12 = 4096 of equal prior mass (Townsend et al. use 2^12 for their VAE).
DEFAULT_LATENT_BITS = 12
#: The most bits per real latent unit: 2^20 bins, each still given a quantum of the 24-bit probabilities.
MAX_LATENT_BITS = 20


def _constriction():
    try:
        import constriction
    except ImportError:
        raise ZooError("pyro-zoo compress codes with the constriction library; install it with "
                       "pip install 'pyro-zoo[compress]' (or pip install constriction)") from None
    return constriction


@dataclass
class SiteCode:
    """How one latent site is coded: ``"real"`` (equal-mass bins), ``"binary"`` or ``"categorical"``."""

    name: str
    kind: str


def _unwrap(fn):
    while isinstance(fn, (dist.Independent, torch.distributions.Independent)):
        fn = fn.base_dist
    return getattr(fn, "base", fn)              # JointDiscrete holds its Bernoulli / OneHotCategorical


def _normal(fn, what: str) -> Tuple[np.ndarray, np.ndarray]:
    base = _unwrap(fn)
    if type(base) not in (dist.Normal, torch.distributions.Normal, StandardNormal):
        raise COMPRESS_NEEDS_NORMAL.error(f"a real latent's {what} is a {type(fn).__name__}")
    return (base.loc.detach().double().reshape(-1).cpu().numpy(), base.scale.detach().double().reshape(-1).cpu().numpy())


def _probabilities(fn, kind: str) -> np.ndarray:
    """The categorical probabilities of each symbol of a discrete site, ``[units, classes]``, float64."""
    base = _unwrap(fn)
    logits = base.logits.detach().double().cpu()
    if kind == "binary":
        logits = torch.stack([torch.zeros_like(logits), logits], -1)       # P(0) ∝ 1, P(1) ∝ e^l
    return torch.softmax(logits.reshape(-1, logits.shape[-1]), -1).numpy()


@dataclass(frozen=True)
class ObservedCode:
    """An observed site whose values are coded, and the columns of a data row it holds (in its event's order)."""

    name: str
    columns: Tuple[int, ...]


def coded_sites(model) -> Tuple[ObservedCode, ...]:
    """The observed sites of ``model`` whose values the coder codes, each with the columns of a data row it holds.

    A built-in model observes all of x at the site ``"x"``; a model file's observed sites
    (:class:`~zoo.usercode.trace.ObservedSite`) each hold some columns, and the columns no site holds are the
    covariates, given to the coder, not coded. Their levels are :func:`zoo.rules.compress_levels`'.
    """
    observed = getattr(model, "observed", None)
    if not observed:
        return (ObservedCode("x", tuple(range(model.x_dim))),)
    return tuple(ObservedCode(o.name, tuple(o.columns)) for o in observed)


class BitsBackCoder:
    """BB-ANS for a trained zoo model and guide (module docstring).

    Arguments:
        model: a :class:`~zoo.core.contract.ZooModel` whose observation ``"x"`` factors over pixel levels.
        guide: its trained guide, giving a diagonal Normal (real latents) or logits (discrete ones).
        latent_bits: b, so 2^b bins of equal prior mass per real latent unit.
    """

    def __init__(self, model, guide, latent_bits: int = DEFAULT_LATENT_BITS):
        if not 1 <= latent_bits <= MAX_LATENT_BITS:
            raise ZooError(f"latent bits must be between 1 and {MAX_LATENT_BITS}, got {latent_bits}")
        self.model, self.guide, self.latent_bits = model, guide, int(latent_bits)
        self.bins = 2 ** self.latent_bits
        check_compress(model, guide)
        self.sites = [SiteCode(s.name, s.support if s.support in ("binary", "categorical") else "real")
                      for s in model.latents]
        self.observed = coded_sites(model)
        self.levels = compress_levels(model)
        #: the columns of a data row that are coded, site after site, and the covariates given beside them
        self.columns = tuple(c for o in self.observed for c in o.columns)
        self.covariates = tuple(sorted(set(range(model.x_dim)) - set(self.columns)))
        self._dtype = next(iter(model.parameters())).dtype
        grid = ndtri((np.arange(1, self.bins) / self.bins))
        self._edges = np.concatenate([[-np.inf], grid, [np.inf]])                 # standard-normal equal mass
        self._centres = ndtri((np.arange(self.bins) + 0.5) / self.bins)

    # -- the traces ------------------------------------------------------------------------
    def _guide_fns(self, x: torch.Tensor, values: Dict[str, torch.Tensor]) -> Dict[str, object]:
        trace = poutine.trace(poutine.condition(self.guide, data=values)).get_trace(x, idx=torch.arange(1), N=1)
        return {n: s["fn"] for n, s in trace.nodes.items() if s["type"] == "sample" and n in self._names}

    def _model_fns(self, values: Dict[str, torch.Tensor], side: Optional[torch.Tensor]):
        """Each site's distribution given the latent ``values``: from the generative call, or, for a model with
        covariates, from the scoring call on one datum's :meth:`side_row` ``side``."""
        model = poutine.condition(self.model.model, data=values)
        if side is None:
            trace = poutine.trace(model).get_trace(None, N=1)
        else:
            trace = poutine.trace(model).get_trace(side, idx=torch.arange(1), N=1)
        return {n: s["fn"] for n, s in trace.nodes.items() if s["type"] == "sample"}

    def side_row(self, covariates: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The row ``[1, x_dim]`` the model is called on for one datum with ``covariates`` ``[C]`` (module
        docstring): the covariates in their columns, level 0 in the coded ones. ``None`` without covariates."""
        if not self.covariates:
            return None
        row = torch.zeros(1, self.model.x_dim, dtype=self._dtype)
        row[0, list(self.covariates)] = covariates.to(self._dtype)
        return row

    @property
    def _names(self):
        return {s.name for s in self.sites}

    def _pixel_probabilities(self, fns) -> np.ndarray:
        """Each coded column's categorical over the k levels, ``[columns, k]``, in the order of :attr:`columns`."""
        tables = []
        for o in self.observed:
            fn = fns[o.name]
            if levels_of(fn) != self.levels:
                raise ZooError(f"p(x | z) at site {o.name!r} has {levels_of(fn)} levels, and the model declares "
                               f"{self.levels}")
            table = pixel_levels_table(fn).detach().double().cpu().reshape(-1, self.levels)
            if table.shape[0] != len(o.columns):
                raise ZooError(f"site {o.name!r} gives {table.shape[0]} pixels for one datum and holds "
                               f"{len(o.columns)} columns; the coder needs one distribution per column")
            tables.append(table)
        return torch.softmax(torch.cat(tables), -1).numpy()

    # -- one site: symbols <-> values ----------------------------------------------------
    def _posterior_bins(self, q_fn, prior_fn) -> np.ndarray:
        mu, sigma = _normal(q_fn, "posterior")
        m, s = _normal(prior_fn, "prior")
        edges = m[:, None] + s[:, None] * self._edges[None, :]                     # [units, bins + 1]
        cdf = ndtr((edges - mu[:, None]) / sigma[:, None])
        return np.maximum(np.diff(cdf, axis=1), 0.0)

    def _value(self, site: SiteCode, symbols: np.ndarray, prior_fn, like: torch.Tensor) -> torch.Tensor:
        if site.kind == "real":
            m, s = _normal(prior_fn, "prior")
            value = m + s * self._centres[symbols]
        elif site.kind == "binary":
            value = symbols.astype(np.float64)
        else:
            value = np.eye(like.shape[-1])[symbols]
        return torch.as_tensor(value, dtype=like.dtype).reshape(like.shape)

    @staticmethod
    def _symbols(site: SiteCode, value: torch.Tensor) -> np.ndarray:
        if site.kind == "categorical":
            return value.argmax(-1).reshape(-1).cpu().numpy().astype(np.int32)
        return value.reshape(-1).cpu().numpy().astype(np.int32)

    def initial_words(self) -> np.ndarray:
        """The fixed words the chain starts from: enough bits for one datum's latents under q, 32 more."""
        bits = sum((self.latent_bits if s.kind == "real" else 32) * site_units(self.model, s.name) for s in self.sites)
        words = np.random.default_rng(0).integers(1, 2 ** 32, size=bits // 32 + 2, dtype=np.uint32)
        return words

    def max_words(self, num_data: int) -> int:
        """The most words a code of ``num_data`` rows can take, whatever the data.

        Each datum pushes its coded pixels and one symbol per latent unit, every one with a probability of at
        least 2^-PRECISION_BITS (the leaky quantization gives every symbol a quantum; a real unit's bin is
        2^-latent_bits), so each push adds at most PRECISION_BITS bits, and a pop only takes bits off. One word
        per datum more for the coder's rounding, and two for its state, on top of the initial words.
        """
        units = sum(site_units(self.model, s.name) for s in self.sites)
        per_datum = -(-PRECISION_BITS * (len(self.columns) + units) // 32) + 1
        return len(self.initial_words()) + 2 + num_data * per_datum

    # -- the chain -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Tuple[np.ndarray, Dict]:
        """The code words (``uint32``) of the rows of ``x`` ``[N, x_dim]``, and what each step cost: the coded
        columns (levels 0..k-1) are coded, the covariates are read (:meth:`decode` is given them again)."""
        c = _constriction()
        coder = c.stream.stack.AnsCoder(self.initial_words())
        categorical, uniform = c.stream.model.Categorical(perfect=False), c.stream.model.Uniform(self.bins)
        start = time.perf_counter()
        ideal = 0.0
        with evaluation_mode(self.model, self.guide), torch.no_grad():
            for n in range(x.shape[0]):
                xn = x[n:n + 1]
                side = self.side_row(xn[0, list(self.covariates)])
                values, symbols = {}, {}
                for site in self.sites:                                  # pop z ~ q(z | x): the bits back
                    q_fn = self._guide_fns(xn, values)[site.name]
                    if site.kind == "real":
                        prior_fn = self._model_fns(values, side)[site.name]
                        probs = self._posterior_bins(q_fn, prior_fn)
                    else:
                        prior_fn, probs = None, _probabilities(q_fn, site.kind)
                    symbols[site.name] = coder.decode(categorical, probs)
                    ideal += float(np.log2(np.maximum(probs[np.arange(len(probs)), symbols[site.name]], 1e-300)).sum())
                    like = q_fn.sample() if site.kind != "real" else q_fn.mean
                    values[site.name] = self._value(site, symbols[site.name], prior_fn, like)
                fns = self._model_fns(values, side)
                pixels = xn[0, list(self.columns)].cpu().numpy().astype(np.int32)
                probs = self._pixel_probabilities(fns)
                coder.encode_reverse(pixels, categorical, probs)                     # push x with p(x | z)
                ideal -= float(np.log2(probs[np.arange(len(pixels)), pixels]).sum())
                for site in reversed(self.sites):                                    # push z with p(z)
                    if site.kind == "real":
                        coder.encode_reverse(symbols[site.name], uniform)
                        ideal += len(symbols[site.name]) * self.latent_bits
                    else:
                        p = _probabilities(fns[site.name], site.kind)
                        coder.encode_reverse(symbols[site.name], categorical, p)
                        ideal -= float(np.log2(p[np.arange(len(p)), symbols[site.name]]).sum())
        words = coder.get_compressed()
        return words, {"seconds": time.perf_counter() - start, "ideal_bits": ideal}

    def decode(self, words: np.ndarray, num_data: int, *,
               covariates: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, float]:
        """The coded columns of the ``num_data`` rows coded in ``words``, ``[N, columns]`` levels in the model's
        dtype, and the seconds it took; a model with covariates is given the ones it was coded with,
        ``[N, C]``."""
        c = _constriction()
        coder = c.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        categorical, uniform = c.stream.model.Categorical(perfect=False), c.stream.model.Uniform(self.bins)
        rows = [None] * num_data
        start = time.perf_counter()
        dtype = self._dtype
        if self.covariates and (covariates is None or tuple(covariates.shape) != (num_data, len(self.covariates))):
            raise ZooError(f"{self.model.display_name} codes its data given {len(self.covariates)} covariates per "
                           f"datum; decode needs the [{num_data}, {len(self.covariates)}] covariates it was coded with")
        with evaluation_mode(self.model, self.guide), torch.no_grad():
            for n in reversed(range(num_data)):
                side = self.side_row(None if covariates is None else covariates[n])
                values, symbols = {}, {}
                for site in self.sites:                                               # pop z with p(z)
                    fns = self._model_fns(values, side)
                    fn = fns[site.name]
                    like = fn.sample()
                    if site.kind == "real":
                        symbols[site.name] = coder.decode(uniform, like.numel())
                    else:
                        symbols[site.name] = coder.decode(categorical, _probabilities(fn, site.kind))
                    values[site.name] = self._value(site, symbols[site.name], fn, like)
                fns = self._model_fns(values, side)
                probs = self._pixel_probabilities(fns)
                pixels = coder.decode(categorical, probs)                             # pop x with p(x | z)
                rows[n] = torch.as_tensor(pixels, dtype=dtype).reshape(1, -1)
                xn = torch.zeros(1, self.model.x_dim, dtype=dtype) if side is None else side.clone()
                xn[0, list(self.columns)] = rows[n][0]
                q_fns = self._guide_fns(xn, values)
                for site in reversed(self.sites):                                     # push z with q(z | x)
                    q_fn = q_fns[site.name]
                    if site.kind == "real":
                        probs = self._posterior_bins(q_fn, fns[site.name])
                    else:
                        probs = _probabilities(q_fn, site.kind)
                    coder.encode_reverse(symbols[site.name], categorical, probs)
        left = coder.get_compressed()
        seed = self.initial_words()
        if len(left) != len(seed) or not np.array_equal(left, seed):
            raise ZooError("the code does not end in the chain's initial words: it is corrupt")
        return torch.cat(rows), time.perf_counter() - start


def site_units(model, name: str) -> int:
    """The symbols one datum's latent site ``name`` is coded as: its units (a block of categoricals: one each)."""
    site = next(s for s in model.latents if s.name == name)
    shape = tuple(site.event_shape)
    return int(np.prod(shape[:-1] if site.support == "categorical" and len(shape) > 1 else shape))

