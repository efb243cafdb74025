"""adray: a Ray-native platform for the decision models of online advertising."""

__version__ = "0.1.0"
