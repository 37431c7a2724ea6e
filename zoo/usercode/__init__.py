"""The zoo's boundary with code it does not own: a user's Pyro model or guide, and the file it comes from.

:func:`zoo.from_pyro` (:mod:`zoo.models.pyro_model`) and :func:`zoo.from_pyro_guide`
(:mod:`guides.user`) wrap a user's function; what both sides need lives here, once:

- :mod:`zoo.usercode.specs`: ``FILE.py:NAME`` specs, how they are named, made absolute and labelled;
- :mod:`zoo.usercode.loading`: importing a user's file with SHA-256 pinning, and its registry entry
  (:func:`~zoo.usercode.loading.make_component`, the same for model files and guide files);
- :mod:`zoo.usercode.errors`: an exception raised in the user's code as one line naming its file and line;
- :mod:`zoo.usercode.functions`: reading a user's callable (a factory's first argument, the networks it names);
- :mod:`zoo.usercode.params`: the function's parameters as the wrapper's own, claimed by one wrapper;
- :mod:`zoo.usercode.messengers`: the Pyro messengers a wrapped function runs under;
- :mod:`zoo.usercode.supports`: a distribution's support as the zoo's guides see it;
- :mod:`zoo.usercode.trace`: the trial run's trace read against the contract (latents, observations, plates).

Nothing here imports anything of the zoo but :mod:`zoo.core`.
"""
