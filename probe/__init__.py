"""probe: when compression breaks a language model's knowledge, is it forgotten or only displaced?"""

__version__ = "0.1.0"
