"""`curate serve DIR`: serve a folder (a demo pool) on 127.0.0.1 with the fault routes."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clikit.errors import UserError


def serve(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to serve, e.g. a demo pool made by `curate demo-pool`.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8000,
    slow_seconds: Annotated[float, typer.Option(help="Delay of the /slow/ route, in seconds.")] = 1.5,
) -> None:
    """Serve a folder on 127.0.0.1 with fault routes, until Ctrl-C.

    /PATH serves DIR/PATH; /slow/PATH answers after --slow-seconds; /redirect/PATH is a
    302 to /PATH; /html/PATH answers an HTML page instead of an image.
    """
    from curate.serve import serve_forever  # imported when the command runs: http.server (17 ms of --help)

    if not directory.is_dir():
        raise UserError(f"{directory} is not a folder; give the folder to serve (e.g. a demo pool)")
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    if slow_seconds < 0:
        raise UserError(f"--slow-seconds must not be negative, got {slow_seconds}")

    def ready(url: str) -> None:
        typer.echo(f"serving {directory.resolve()} at {url} (fault routes: /slow/, /redirect/, /html/); Ctrl-C stops")

    try:
        serve_forever(directory, port=port, slow_seconds=slow_seconds, on_ready=ready)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); pick another --port") from None


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
