"""Merging fine-tuned models: the streaming merge core, the method registry, and `merginguriel merge`.

```python
from merginguriel.merging import MergeSpec, Source, merge, METHODS
merge(MergeSpec(base, [Source(path, "de-DE", 0.6), Source(path2, "fr-FR", 0.4)], "ties", {"density": 0.2}, out))
```
"""

from merginguriel.merging.engine import merge
from merginguriel.merging.registry import METHODS, Block, Method, format_methods, get_method, load_methods, register
from merginguriel.merging.spec import MergeSpec, Source

load_methods()

__all__ = ["MergeSpec", "Source", "merge", "METHODS", "Block", "Method", "register", "get_method", "load_methods", "format_methods"]
