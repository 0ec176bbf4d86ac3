"""`python -m abcjax` is the `abcjax` command."""

from abcjax.cli import main

if __name__ == "__main__":
    main()
