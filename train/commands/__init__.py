"""One module per `train` subcommand; each defines `register(app)`. Heavy imports go inside the command."""
