"""``python -m diskaudit``: the same entry point as the ``diskaudit`` console script."""

from diskaudit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
