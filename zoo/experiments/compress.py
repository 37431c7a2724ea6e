"""``pyro-zoo compress RUN``: code a split with a trained run by bits-back ANS, decode it, and compare.

:func:`compress_run` encodes the split (or its fixed subset of ``limit`` rows) with the run's model and
guide (:class:`~zoo.evaluation.bitsback.BitsBackCoder`), writes the code file, reads it back, decodes it
and checks that the decoded data are bit-identical; it reports the achieved bits/dim beside the
−ELBO in bits/dim on the same images (the rate bits-back promises) and beside gzip, bz2, lzma and PNG,
all measured in the same call. Two rates are reported: the payload's (the ANS words, what the coder
achieves) and the whole file's (``file_bits_per_dim``: the words, the magic and the header that the file
needs to be decoded, what a user stores). :func:`decode_file` decodes a code file and verifies it.

The code file is ``MAGIC``, a version byte, a 4-byte header length, a JSON header and the ANS words
(little-endian uint32). The header holds the SHA-256 of the weights it was coded with (the run's
``checkpoint.pt``, or ``best.pt`` for a run trained with ``--keep-best``: another run cannot decode it), the data's shape and levels, the coder's precision, and two checksums: SHA-256 of
the words (a corrupt or truncated file is refused before decoding) and of the data (the decoded rows
are compared with it, so a file that passes the first check but was made otherwise is refused too,
never turned into a wrong image).

A run trained with covariates (``--covariates``; columns its model reads and does not observe) codes the data
columns only, given the covariates (:mod:`zoo.evaluation.bitsback`). The code does not hold them: the decoder
takes them from the same rows of the run's split (the header's ``split`` and ``limit``, :func:`_covariates`) and
refuses them in one line unless they are the ones coded (the header's ``covariates_sha256``). The decoded
``.npy`` holds the data columns.

``--out`` never replaces a file this command did not make for it (:func:`_existing_out`): a run folder's own
files (:data:`~zoo.experiments.run_folder.RUN_FILES`) and the file being read are refused, and an existing
file is replaced only if it is what the command writes: a code file of this run (its ``MAGIC`` header, naming
this run's checkpoint), or, for
``--decode``, the ``.npy`` of exactly the rows this code file decodes to (the same command run again).
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import math
import os
import re
import struct
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from zoo.core.seeds import stream_seed
from zoo.core.errors import ZooError
from zoo.core.files import open_regular, read_bytes
from zoo.data.dataset import SPLITS
from zoo.evaluation.bitsback import MAX_LATENT_BITS, PRECISION_BITS, BitsBackCoder
from zoo.evaluation.harness import bound_per_datum
from zoo.experiments.run_folder import RUN_FILES, reader_lock, writer_lock
from zoo.experiments.trained import Invocation, fixed_subset_rows
from zoo.rules import check_compress
from zoo.training.checkpoint import atomic_write_bytes

__all__ = ["compress_run", "decode_file", "baseline_bits", "MAGIC", "VERSION", "compression_markdown"]

MAGIC = b"PZBB"
VERSION = 1


def _level_dtype(levels: int):
    return np.uint8 if levels <= 256 else np.uint16


def _data_bytes(x: torch.Tensor, levels: int) -> bytes:
    return np.ascontiguousarray(x.cpu().numpy().astype(_level_dtype(levels))).tobytes()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def baseline_bits(x: torch.Tensor, levels: int, image_shape: Optional[Tuple[int, int]]) -> Dict[str, int]:
    """Bits that gzip, bz2, lzma (each at its strongest setting) and PNG take for the rows of ``x``.

    The generic coders read the pixels as bytes, packed 8 to a byte for binary data (``np.packbits``);
    PNG gets all images tiled into one image (a 1-bit image for binary data, else 8-bit grey), so its
    per-file header is paid once, as for the others.
    """
    from PIL import Image
    a = x.cpu().numpy().astype(np.uint8)
    raw = np.packbits(a).tobytes() if levels == 2 else a.tobytes()
    tile = a.reshape(a.shape[0] * image_shape[0], image_shape[1]) if image_shape else a
    buf = io.BytesIO()
    if levels == 2:
        Image.fromarray(tile.astype(bool)).save(buf, format="PNG", optimize=True)
    else:
        Image.fromarray(tile, mode="L").save(buf, format="PNG", optimize=True)
    return {"gzip": 8 * len(gzip.compress(raw, 9)), "bz2": 8 * len(bz2.compress(raw, 9)),
            "lzma": 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)), "png": 8 * len(buf.getvalue())}


def _open(run_dir: Path, invocation: Optional[Invocation]):
    """The run in ``run_dir`` with the weights its results score (the best epoch's under ``--keep-best``,
    :func:`~zoo.experiments.trained.open_trained`) as ``invocation`` opens it (its model and guide files, the data
    folder it names), checked for coding, and the SHA-256 of those weights."""
    run = (invocation or Invocation()).open(run_dir)
    check_compress(run.model, run.guide)
    return run, run.weights_sha256()


def _covariate_bytes(c: torch.Tensor) -> bytes:
    return np.ascontiguousarray(c.cpu().numpy().astype("<f4")).tobytes()


def _coded_rows(run, split: str, limit: Optional[int]) -> torch.Tensor:
    """The rows of ``split`` that compress codes with ``limit``: all, or their fixed subset (on the CPU)."""
    x = run.data.split(split)
    rows = fixed_subset_rows(x.shape[0], limit)
    return (x if rows is None else x[rows]).cpu()


def _covariates(path: Path, header: Dict, run, coder: BitsBackCoder) -> Optional[torch.Tensor]:
    """The covariates the code file ``path`` (its checked ``header``) was coded with, ``[N, C]``: the covariate
    columns of the rows of the run's split that the header names, refused unless they are the ones coded
    (``covariates_sha256``). ``None`` for a run without covariates."""
    if not coder.covariates:
        return None
    c = _coded_rows(run, header["split"], header["limit"])[:, list(coder.covariates)]
    if c.shape[0] != header["num_data"] or _sha256(_covariate_bytes(c)) != header["covariates_sha256"]:
        raise ZooError(f"{path} was coded given covariates that this run's {header['split']} split does not hold "
                       f"(their SHA-256 differs); its data columns decode only with the covariates they were coded "
                       f"with: decode it with the run and data file it was made from")
    return c


def _existing_out(out: Path, what: str, reads: Sequence[Path]) -> bool:
    """Whether ``out``, the ``what`` a command is to write, exists; refused in one line where it may not be
    replaced whatever it holds: a run folder's own file (by name, existing or not), a file the command reads
    (``reads``), or not a regular file. What an existing file must hold to be replaced is the caller's check."""
    if out.name in RUN_FILES:
        raise ZooError(f"{out}: {out.name} is the name of a run folder's own file, never a {what}; name a new file "
                       f"with --out")
    if not os.path.lexists(out):
        return False
    if out.is_symlink() or not out.is_file():
        raise ZooError(f"{out} is not a regular file (a link, a folder, a FIFO or a device), so it is not replaced "
                       f"by a {what}; name a new file with --out")
    if any(p.is_file() and os.path.samefile(out, p) for p in reads):
        raise ZooError(f"{out} is the file being read; name a new file for the {what} with --out")
    return True


def _code_file_run(path: Path) -> Optional[str]:
    """The checkpoint SHA-256 (``run_sha256``) that the header of the code file ``path`` names, or None where
    ``path`` is not a code file whose header parses (bounded reads, as :func:`_read`)."""
    with open_regular(path, "file") as f:
        start = len(MAGIC) + 5
        prefix = f.read(start)
        if len(prefix) < start or prefix[:len(MAGIC)] != MAGIC:
            return None
        (header_size,) = struct.unpack(">I", prefix[len(MAGIC) + 1:])
        if header_size > MAX_HEADER_BYTES:
            return None
        text = f.read(header_size)
    try:
        header = json.loads(text.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    run = header.get("run_sha256") if isinstance(header, dict) else None
    return run if isinstance(run, str) else None


def _holds_rows(path: Path, header: Dict) -> bool:
    """Whether the ``.npy`` file ``path`` holds exactly the rows the code file of ``header`` decodes to (its data
    checksum), as ``compress --decode`` writes them."""
    n, d, dtype = header["num_data"], header["x_dim"], _level_dtype(header["levels"])
    limit = 2 ** 16 + n * d * np.dtype(dtype).itemsize
    if path.stat().st_size > limit:
        return False
    data = read_bytes(path, ".npy file", limit)
    try:
        rows = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception:                   # whatever np.load raises on a file that is not an .npy: not ours
        return False
    return (isinstance(rows, np.ndarray) and rows.dtype == dtype and rows.shape == (n, d)
            and _sha256(np.ascontiguousarray(rows).tobytes()) == header["data_sha256"])


def compress_run(run_dir, split: str = "test", limit: Optional[int] = None, out=None,
                 latent_bits: int = 12, elbo_particles: int = 10, invocation: Optional[Invocation] = None) -> Dict:
    """Code ``split`` of the run in ``run_dir`` to ``out`` (default ``RUN/compressed-SPLIT.pzbb``), decode it
    back from the file, check it, and measure it against the −ELBO and the generic coders. ``invocation``: the
    model and guide files of a run made from files, and the data folder where it is not the run's
    (:class:`~zoo.experiments.trained.Invocation`; only ``data_dir`` and ``device`` may change)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ZooError(f"no run folder at {run_dir}; train one there first ('pyro-zoo train ... --out {run_dir}')")
    out = Path(out) if out else run_dir / f"compressed-{split}.pzbb"
    existing = _existing_out(out, "code file", [run_dir / "checkpoint.pt", run_dir / "best.pt",
                                                      run_dir / "config.json"])
    coded_with = _code_file_run(out) if existing else None
    if existing and coded_with is None:
        raise ZooError(f"{out} exists and is not a code file that pyro-zoo compress wrote (no {MAGIC.decode()} "
                       f"header), so it is left as it was; name a new file with --out")
    # the run folder's writer lock where the code file goes into it; a code file elsewhere only reads the run, under
    # a shared lock where the folder has one (no writer mid-change; a read-only folder is read as it is)
    where, home = out.absolute().parent.resolve(), run_dir.resolve()
    inside = where == home or home in where.parents
    with writer_lock(run_dir) if inside else reader_lock(run_dir):
        run, run_sha = _open(run_dir, invocation)
        if existing and coded_with != run_sha:
            raise ZooError(f"{out} is a code file of another run (checkpoint SHA-256 {coded_with[:12]}…), so it is "
                           f"left as it was; name a new file with --out")
        x = _coded_rows(run, split, limit)
        run.model.cpu(), run.guide.cpu()
        coder = BitsBackCoder(run.model, run.guide, latent_bits)
        levels, data = coder.levels, x[:, list(coder.columns)]
        words, stats = coder.encode(x)
        header = {"run_sha256": run_sha, "model": run.config.model, "dataset": run.config.dataset, "split": split,
                  "limit": limit, "num_data": int(x.shape[0]), "x_dim": int(data.shape[1]), "levels": levels,
                  "latent_bits": latent_bits, "precision_bits": PRECISION_BITS, "num_words": int(len(words)),
                  "message_sha256": _sha256(words.astype("<u4").tobytes()),
                  "data_sha256": _sha256(_data_bytes(data, levels))}
        if coder.covariates:
            header["covariates_sha256"] = _sha256(_covariate_bytes(x[:, list(coder.covariates)]))
        text = json.dumps(header, sort_keys=True).encode()
        code_file = MAGIC + bytes([VERSION]) + struct.pack(">I", len(text)) + text + words.astype("<u4").tobytes()
        atomic_write_bytes(out, code_file)
        decoded, decode_seconds = _decode(out, *_read(out, run, run_sha), run)
        if not torch.equal(decoded, data):
            raise ZooError(f"the decoded {split} data differ from the original; {out} is not a valid code")
        torch.manual_seed(stream_seed(run.config.seed, "compress"))
        neg_elbo = -bound_per_datum(run.model, run.guide, x, num_particles=elbo_particles)
    N, D = data.shape
    per_dim = 1.0 / (N * D)
    bits, file_bits = 32 * len(words), 8 * len(code_file)
    baselines = baseline_bits(data, levels, None if coder.covariates else run.data.image_shape)
    return {"run": str(run_dir), "file": str(out), "model": run.config.model, "dataset": run.config.dataset,
            "split": split, "num_data": N, "x_dim": D, "covariates": len(coder.covariates), "levels": levels,
            "latent_bits": latent_bits,
            "precision_bits": PRECISION_BITS, "bit_exact": True, "bits": bits, "bits_per_dim": bits * per_dim,
            "file_bits": file_bits, "header_bits": file_bits - bits, "file_bits_per_dim": file_bits * per_dim,
            "ideal_bits_per_dim": stats["ideal_bits"] * per_dim,
            "neg_elbo_bits_per_dim": neg_elbo / (D * math.log(2)), "elbo_particles": elbo_particles,
            "baselines_bits_per_dim": {k: v * per_dim for k, v in baselines.items()},
            "encode_seconds": stats["seconds"], "decode_seconds": decode_seconds,
            "encode_images_per_second": N / stats["seconds"], "decode_images_per_second": N / decode_seconds}


#: The most bytes of a code file's JSON header (compress writes about 600).
MAX_HEADER_BYTES = 2 ** 16

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _read(path: Path, run, run_sha: str) -> Tuple[Dict, np.ndarray]:
    """The checked header and the words of the code file ``path`` for ``run``, refused in one line unless
    whole, unchanged and possible.

    Only a regular file is read (a FIFO would block, ``/dev/zero`` never ends); every claim of its header is
    checked (:func:`_checked_header`) against the run and the file's length before the words are read, and no
    more bytes are read than the header says the file holds.
    """
    fix = "give the .pzbb file that 'pyro-zoo compress' wrote"
    with open_regular(path, "pyro-zoo code file", fix) as f:
        size = os.fstat(f.fileno()).st_size
        start = len(MAGIC) + 5
        prefix = f.read(start)
        if len(prefix) < start or prefix[:len(MAGIC)] != MAGIC:
            raise ZooError(f"{path} is not a pyro-zoo code file (no {MAGIC.decode()} header)")
        if prefix[len(MAGIC)] != VERSION:
            raise ZooError(f"{path} is a version {prefix[len(MAGIC)]} code file; this pyro-zoo reads version "
                           f"{VERSION}")
        (header_size,) = struct.unpack(">I", prefix[len(MAGIC) + 1:])
        if header_size > min(MAX_HEADER_BYTES, size - start):
            raise ZooError(f"{path} is corrupt or truncated: its header claims {header_size} bytes, and the file "
                           f"holds {size - start} after the magic (a header takes at most {MAX_HEADER_BYTES})")
        header = _checked_header(f.read(header_size), path, run, run_sha)
        code_size = 4 * header["num_words"]
        if size - start - header_size != code_size:
            raise ZooError(f"{path} is truncated or corrupt: {size - start - header_size} bytes of code, the header "
                           f"says {code_size}")
        payload = f.read(code_size + 1)
    if len(payload) != code_size:
        raise ZooError(f"{path} changed while it was read; run the command again")
    if _sha256(payload) != header["message_sha256"]:
        raise ZooError(f"{path} is corrupt: its code fails the checksum in its header")
    return header, np.frombuffer(payload, dtype="<u4").astype(np.uint32)


def _checked_header(text: bytes, path: Path, run, run_sha: str) -> Dict:
    """The header of the code file ``path`` (its JSON ``text``), refused in one line unless each claim is one a
    file that compress wrote for ``run`` can make: the run's checkpoint, its data's columns and levels, at most
    the rows of the split it names (compress codes a split or a subset of it, so decoding never runs longer
    than coding that split did), and at most :meth:`~zoo.evaluation.bitsback.BitsBackCoder.max_words` words
    for those rows.

    No bound of the rows by the number of words holds: bits-back gives each datum's latent bits back, so a
    datum the model is sure of costs as little as 64 * 2^-24 / ln 2 bits (64 binary pixels), and a valid code
    of millions of such rows fits in a few words. The split's rows bound the decoding instead.
    """
    try:
        header = json.loads(text.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ZooError(f"{path} is corrupt or truncated: its header does not parse") from None
    if not isinstance(header, dict):
        raise ZooError(f"{path} is corrupt: its header is a JSON {type(header).__name__}, not an object")
    missing = [k for k in ("run_sha256", "split", "num_data", "x_dim", "levels", "latent_bits", "num_words",
                           "message_sha256", "data_sha256") if k not in header]
    if missing:
        raise ZooError(f"{path} is corrupt: its header lacks {', '.join(missing)}")

    def claim(key: str, ok, expected: str):
        value = header[key]
        if not ok(value):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
            raise ZooError(f"{path} is corrupt: its header says {key} {shown}, where a code file of this run has "
                           f"{expected}")
        return value

    def count(low: int, high: Optional[int] = None):
        return lambda v: type(v) is int and low <= v and (high is None or v <= high)

    for key in ("run_sha256", "message_sha256", "data_sha256"):
        claim(key, lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "a SHA-256 in hex")
    if header["run_sha256"] != run_sha:
        raise ZooError(f"{path} was coded with another run (checkpoint SHA-256 {header['run_sha256'][:12]}…); decode "
                       f"it with that run")
    split = claim("split", lambda v: v in SPLITS, f"one of {', '.join(SPLITS)}")
    claim("latent_bits", count(1, MAX_LATENT_BITS), f"an integer 1..{MAX_LATENT_BITS}")
    coder = BitsBackCoder(run.model, run.guide, header["latent_bits"])
    rows = run.data.split(split).shape[0]
    columns = len(coder.columns)
    claim("x_dim", lambda v: type(v) is int and v == columns, f"this run's {columns} data columns")
    claim("levels", lambda v: type(v) is int and v == coder.levels, f"this run's {coder.levels} levels")
    claim("num_data", count(1, rows), f"1 to {rows} rows (the run's {split} split)")
    most = coder.max_words(header["num_data"])
    claim("num_words", count(0, most), f"at most {most} words for {header['num_data']} rows")
    if coder.covariates:                # the rows whose covariates the decoder is given (_covariates)
        for key in ("limit", "covariates_sha256"):
            if key not in header:
                raise ZooError(f"{path} is corrupt: its header lacks {key}, which a code of a run with covariates has")
        claim("limit", lambda v: v is None or count(1)(v), "null or a count of rows")
        claim("covariates_sha256", lambda v: isinstance(v, str) and _SHA256.fullmatch(v), "a SHA-256 in hex")
    return header


def _decode(path: Path, header: Dict, words: np.ndarray, run) -> Tuple[torch.Tensor, float]:
    """The rows the checked ``header`` and ``words`` of the code file ``path`` decode to with ``run``, verified."""
    coder = BitsBackCoder(run.model, run.guide, header["latent_bits"])
    covariates = _covariates(path, header, run, coder)
    try:
        x, seconds = coder.decode(words, header["num_data"], covariates=covariates)
    except (ValueError, RuntimeError, OverflowError) as e:
        raise ZooError(f"{path} does not decode with this run ({type(e).__name__}); it is corrupt") from None
    if _sha256(_data_bytes(x, header["levels"])) != header["data_sha256"]:
        raise ZooError(f"{path} decodes to data that fail the checksum in its header; it is corrupt or was coded "
                       f"otherwise")
    return x, seconds


def decode_file(run_dir, path, out=None, invocation: Optional[Invocation] = None) -> Dict:
    """Decode the code file ``path`` with the run in ``run_dir`` and verify it; with ``out``, save the rows as
    an ``.npy`` array of levels (a new file, or the one this code file was decoded to before)."""
    run_dir, path = Path(run_dir), Path(path)
    out = None if out is None else Path(out)
    existing = out is not None and _existing_out(out, ".npy of decoded rows", [path])
    run, run_sha = _open(run_dir, invocation)
    run.model.cpu(), run.guide.cpu()
    header, words = _read(path, run, run_sha)
    if existing and not _holds_rows(out, header):
        raise ZooError(f"{out} exists and does not hold the rows {path} decodes to, so it is left as it was; name "
                       f"a new file with --out")
    x, seconds = _decode(path, header, words, run)
    if out is not None:
        buf = io.BytesIO()
        np.save(buf, x.numpy().astype(_level_dtype(header["levels"])))
        atomic_write_bytes(out, buf.getvalue())
    return {"file": str(path), "num_data": int(x.shape[0]), "x_dim": int(x.shape[1]), "decode_seconds": seconds,
            "verified": True, "out": str(out) if out else None}


def compression_markdown(rows) -> str:
    """A table of compression results: bits/dim (lower is better) of bits-back ANS, its payload and its whole
    file, beside its −ELBO and the generic coders, and the throughput."""
    head = ("| run | data | images | BB-ANS bits/dim | file bits/dim | −ELBO bits/dim | ratio | gzip | bz2 | lzma | "
            "PNG | encode img/s | decode img/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        b = r["baselines_bits_per_dim"]
        whole = f"{r['file_bits_per_dim']:.4f}" if "file_bits_per_dim" in r else "–"
        lines.append(f"| {r['model']} | {r['dataset']} ({r['levels']} levels, {r['split']}) | {r['num_data']} | "
                     f"{r['bits_per_dim']:.4f} | {whole} | {r['neg_elbo_bits_per_dim']:.4f} | "
                     f"{r['bits_per_dim'] / r['neg_elbo_bits_per_dim']:.3f} | {b['gzip']:.4f} | {b['bz2']:.4f} | "
                     f"{b['lzma']:.4f} | {b['png']:.4f} | {r['encode_images_per_second']:.0f} | "
                     f"{r['decode_images_per_second']:.0f} |")
    r = rows[0] if rows else {}
    return ("\n".join(lines) + f"\n\nBits per dimension, lower is better; every row decoded bit-exactly. BB-ANS: the "
            f"code's words; file: the whole code file, its header (the run's checksum, the data's shape and checksums) "
            f"included. Real latents "
            f"in 2^{r.get('latent_bits', '?')} bins of equal prior mass per unit, probabilities at "
            f"{r.get('precision_bits', PRECISION_BITS)}-bit precision (constriction's AnsCoder); −ELBO with "
            f"{r.get('elbo_particles', '?')} samples per image on the same images; ratio = BB-ANS / −ELBO. gzip, bz2, "
            f"lzma: the pixels as bytes (binary: 8 per byte); PNG: all images tiled into one.\n")
