# `python -m train ...` (torchrun needs a module entry point)
from train.cli import main

if __name__ == "__main__":
    main()
