"""``stmsearch dashboard``: write the dashboard page, or serve it live."""
from __future__ import annotations

from pathlib import Path

import click

from ..dashboard.views import ViewsError
from ..results.records import split_names
from .errors import user_errors


@click.command("dashboard")
@click.option("--storage", required=True, help="Optuna storage URL, e.g. sqlite:///studies.db.")
@click.option("--study", "studies", multiple=True, required=True,
              help="Study name; give it twice (or comma-separated) to put two studies on one front.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default dashboard.html unless --serve).")
@click.option("--serve", is_flag=True, help="Serve the page and reload it as new trials land.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind with --serve.")
@click.option("--port", default=8050, show_default=True, type=click.IntRange(0, 65535), help="Port for --serve.")
@click.option("--views", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="View definitions (YAML); default: the packaged copy of dashboards/default.yaml.")
def dashboard_cmd(storage: str, studies: tuple[str, ...], out: Path | None, serve: bool, host: str, port: int,
                  views: Path | None) -> None:
    """Pareto fronts, hypervolume, importances and a trial table for one or more studies."""
    from ..dashboard.build import write_dashboard
    from ..dashboard.server import DashboardApp, make_server
    from ..dashboard.views import load_views

    names = split_names(studies)
    with user_errors(ViewsError):
        viewset = load_views(views)
        if out is not None or not serve:
            path = write_dashboard(storage, names, out or Path("dashboard.html"), viewset)
            click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
        if serve:
            app = DashboardApp(storage, names, viewset)
            app.page()  # fail now, not on the first request, if the studies cannot be read
            server = make_server(app, host, port)
    if not serve:
        return
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host}: anyone who can reach it sees the studies", err=True)
    shown_host, shown_port = server.server_address[:2]
    click.echo(f"serving {', '.join(names)} at http://{shown_host}:{shown_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
