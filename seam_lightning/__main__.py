"""``python -m seam_lightning`` is the ``seam-lightning`` command."""

from seam_lightning.cli import main

if __name__ == "__main__":
    main()
