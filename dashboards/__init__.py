"""The Dash app over artifacts/ (read-only). Built in a later stage."""
