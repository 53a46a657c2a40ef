"""Merge jobs: the one description of a merge (which models, how merged, where judged), its one check, and the one
function that runs it, for `merginguriel merge`, sweep points, `advise` and the quick start alike.

```python
from merginguriel.jobs import MergeJob, run_job
result = run_job(MergeJob(target="sw-KE", selection={"similarity": "real", "num_sources": 5}, merge={"method": "ties"}))
```
"""

from merginguriel.jobs.run import JobPlan, JobResult, plan_job, run_job
from merginguriel.jobs.spec import CheckedJob, EvaluateConfig, MergeJob, MethodConfig, SelectionConfig, job_from_dict

__all__ = ["CheckedJob", "EvaluateConfig", "JobPlan", "JobResult", "MergeJob", "MethodConfig", "SelectionConfig",
           "job_from_dict", "plan_job", "run_job"]
