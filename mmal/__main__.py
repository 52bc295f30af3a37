"""``python -m mmal`` runs the command-line interface (also under torchrun)."""

from mmal.cli import main

if __name__ == "__main__":
    main()
