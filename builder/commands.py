"""How the build runs commands: through rescue_app.run, isolated in namespaces
when they mount, with the full output kept in build.log when they fail."""

from __future__ import annotations

import os

from builder.context import BuildContext
from rescue_app.errors import CommandError
from rescue_app.run import run


def isolated(argv: list[str]) -> list[str]:
    """Run ``argv`` in its own mount and PID namespace.

    Mounts made inside vanish when the last process of the namespace ends, and
    --kill-child kills the whole namespace if we are killed: a failed or
    interrupted build leaves no mounts and no processes.
    """
    return [
        "unshare", "--mount", "--propagation", "private",
        "--pid", "--fork", "--kill-child", "--", *argv,
    ]  # fmt: skip


def clean_env() -> dict[str, str]:
    # The host's pip settings (find-links, require-virtualenv) must not leak
    # into the image's offline install.
    return {k: "" for k in os.environ if k.startswith("PIP_")}


def run_logged(ctx: BuildContext, argv: list[str], **kwargs: object) -> str:
    """Run a build command; on failure keep its full output in build.log."""
    log_path = ctx.build_dir / "build.log"
    try:
        proc = run(argv, **kwargs)  # type: ignore[arg-type]
    except CommandError as exc:
        ctx.build_dir.mkdir(parents=True, exist_ok=True)
        with log_path.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{exc.stderr}\n")
        raise CommandError(str(exc), hint=f"full output in {log_path}", stderr=exc.stderr) from exc
    return proc.stdout
