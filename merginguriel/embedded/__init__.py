"""The embedded default: a seeded synthetic world (MASSIVE-format data in typology-shaped languages) and a tiny
XLM-R-architecture backbone whose weights are planted from a shared meaning space (``meaning``) and a hidden mixture of
causes of cross-lingual relatedness (``relatedness``), built offline in seconds. MASSIVE reading and writing live in
``merginguriel.data``; what the world is measured with lives in ``benchmarks/`` (embedded_measure, embedded_outcomes)."""
