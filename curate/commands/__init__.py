"""One module per `curate` subcommand; each defines `register(app)`.

Command modules import the stage modules that pull in heavy libraries (numpy, pyarrow,
torch, img2dataset, faiss) inside the command function, each with a comment naming them,
so `curate --help` stays fast; light ones are imported at the top.
"""
