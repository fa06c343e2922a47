"""Stopping a run the way Ctrl-C does, for the resume tests."""

import inspect


def interrupt_at_epoch(patch, module, name: str, epoch: int) -> None:
    """With `patch` (a monkeypatch), make module.<name> raise KeyboardInterrupt when it is
    called for epoch index `epoch` (its `epoch` argument), and run as usual otherwise."""
    real = getattr(module, name)
    signature = inspect.signature(real)

    def interrupted(*args, **kwargs):
        if signature.bind(*args, **kwargs).arguments["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    patch.setattr(module, name, interrupted)
