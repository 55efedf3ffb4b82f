"""kneuron's command line: a thin layer over the library, one file per command group."""
from __future__ import annotations

import typer

from kneuron.cli import _common  # noqa: F401  (sets the environment before transformers is imported)
from kneuron.cli.bench import app as bench_app
from kneuron.cli.facts import app as facts_app
from kneuron.cli.organism import app as organism_app
from kneuron.cli.paper import dkn, likn, reproduce
from kneuron.cli.plant import plant_cmd
from kneuron.cli.probe import probe
from kneuron.cli.runs import evaluate, intervene, locate

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find, test and use the knowledge neurons of transformer language models.")
for command in (probe, locate, intervene, evaluate, likn, dkn, reproduce):
    app.command()(command)
app.command("plant")(plant_cmd)
app.add_typer(facts_app, name="facts")
app.add_typer(organism_app, name="organism")
app.add_typer(bench_app, name="bench")


def main():
    app()


if __name__ == "__main__":
    main()
