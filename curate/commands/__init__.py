"""One module per `curate` subcommand; each defines `register(app)`.

Command modules import heavy libraries (torch, img2dataset, faiss) inside the command
function, so `curate --help` stays fast.
"""
