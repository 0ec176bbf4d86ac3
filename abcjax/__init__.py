"""abcjax: train character-level LSTMs on folk tunes in ABC notation, and generate tunes by the thousand."""

__version__ = "0.1.0"
