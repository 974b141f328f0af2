"""Start-up hook of ``python -m gadgetron PORT gadgets.passnet_gadget [TARGET]``; a no-op elsewhere.

``passnet_gadgetron_hardening.pth`` (installed with the package, see setup.py) calls
:func:`install` at the start of every interpreter, because two things have to happen in the
step's process before gadgetron's ``__main__`` runs:

- it reads the step configuration and the ISMRMRD header before it imports the step, so the
  step cannot harden that read itself: :func:`gadgets.gadgetron_adapter.harden_handshake`;
- in distributed mode Gadgetron forwards the chain to its workers without the ``target``
  attribute of ``<execute>`` (its config serialiser writes only ``name`` and ``type``), so a
  worker starts ``python -m gadgetron PORT gadgets.passnet_gadget``, which gadgetron's loader
  cannot run: :func:`add_missing_target` appends the step's one target (``reconstruct``).

Every other process, ``python -m gadgetron`` running another module included, is left as it
is and pays only for importing this module, which needs nothing but ``sys``.
"""

from __future__ import annotations

import sys

# Modules of this package runnable by ``python -m gadgetron`` and their one target.
DEFAULT_TARGETS = {"gadgets.passnet_gadget": "reconstruct"}


def step_module(argv: list[str], orig_argv: list[str]) -> str | None:
    """The module of ours that ``python -m gadgetron PORT MODULE [TARGET]`` runs, else None.

    Parameters
    ----------
    argv
        ``sys.argv`` while ``.pth`` files run: ``["-m", PORT, MODULE, ...]`` under ``-m``.
    orig_argv
        ``sys.orig_argv`` (the interpreter's own command line), to see that the module run is
        ``gadgetron``.
    """
    if argv[:1] != ["-m"] or len(argv) < 3 or argv[2] not in DEFAULT_TARGETS:
        return None
    try:
        at = orig_argv.index("-m")
    except ValueError:
        return None
    return argv[2] if orig_argv[at + 1 : at + 2] == ["gadgetron"] else None


def add_missing_target(argv: list[str], orig_argv: list[str]) -> bool:
    """Append the default target to ``python -m gadgetron PORT MODULE`` (in place).

    Returns
    -------
    bool
        True when a target was added.
    """
    module = step_module(argv, orig_argv)
    if module is None or len(argv) != 3:
        return False
    argv.append(DEFAULT_TARGETS[module])
    return True


def install() -> None:
    """Prepare a ``python -m gadgetron`` run of the step; return at once in any other process."""
    orig_argv = list(getattr(sys, "orig_argv", []))
    if step_module(sys.argv, orig_argv) is None:
        return
    add_missing_target(sys.argv, orig_argv)
    from gadgets import gadgetron_adapter  # gadgetron, numpy: only in the step's process

    gadgetron_adapter.harden_handshake()
