"""Merging fine-tuned models: the method registry (merging/methods/, one interface for every method), the checks of a
merge's inputs (validate), the streaming merge core (engine) and running a checked plan (run).

```python
from merginguriel.merging import MergeSpec, Source, merge, METHODS
merge(MergeSpec(base, [Source(path, "de-DE", 0.6), Source(path2, "fr-FR", 0.4)], "ties", {"density": 0.2}, out))
```
"""

from merginguriel.merging.registry import METHODS, Block, Method, Needs, Reads, format_methods, get_method, load_methods, register
from merginguriel.merging.run import MergeContext, merge, run_plan
from merginguriel.merging.spec import MergeSpec, RunOptions, Source

load_methods()

__all__ = ["MergeSpec", "Source", "RunOptions", "MergeContext", "merge", "run_plan", "METHODS", "Block", "Method", "Needs",
           "Reads", "register", "get_method", "load_methods", "format_methods"]
