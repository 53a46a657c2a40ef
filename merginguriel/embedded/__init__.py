"""The embedded default: a seeded synthetic world (MASSIVE-format data in typology-shaped languages) and a tiny
XLM-R-architecture backbone pre-trained on it, built offline. MASSIVE reading and writing live in ``merginguriel.data``."""
