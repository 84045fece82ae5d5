"""Python run inside the images as `python -c` strings: kept here, where a CI test (tests/docker) checks
that every name they import from the package still exists (a string is checked by nothing else, and the
container suite runs outside CI: its pipeline snippet broke unseen at a restructure)."""

PIPELINE = """
import sys
from mlops.orchestration.steps import STEPS, step_argv
from mlops.orchestration.tasks import run_step
from mlops.run_params import RunParams
from mlops.settings import get_settings
settings = get_settings()
for step in STEPS.values():
    result = run_step(step_argv(settings, step, sys.argv[1], RunParams.defaults(settings)))
    if result.returncode != 0:
        print(result.summary(step))
        sys.exit(result.returncode)
    print(f"step {step.task_id}: ok", flush=True)
"""

IMPORT_ALL = (
    "import importlib, pkgutil, mlops, lightgbm; "
    "names = [m.name for m in pkgutil.walk_packages(mlops.__path__, 'mlops.')]; "
    "[importlib.import_module(n) for n in names]; print(len(names), 'modules')"
)
