"""The command-line ground floor both `curate` and `train` stand on: UserError, app
scaffolding (one Typer app per tool, subcommands in their own modules) and the runner that
turns a UserError into one line on stderr and exit status 2; and the installed versions
every tool records (versions.py)."""
