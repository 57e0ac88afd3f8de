"""Copies one installed distribution's files (and their bytecode) into a staging tree.

    python stage_project.py tfx-serving-suite /opt/project

puts e.g. /opt/venv/lib/python3.10/site-packages/serving/cli.py at
/opt/project/opt/venv/lib/python3.10/site-packages/serving/cli.py, so a Containerfile can
``COPY --from=<stage> /opt/project/ /`` on top of a dependencies-only venv layer: a source change
then rebuilds a layer of a few hundred kilobytes instead of the whole environment.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
from importlib.util import cache_from_source


def stage(name: str, dest: str) -> int:
    dist = importlib.metadata.distribution(name)
    count = 0
    for entry in dist.files or ():
        source = os.path.realpath(dist.locate_file(entry))
        if not os.path.isfile(source):
            continue
        paths = [source]
        if source.endswith(".py"):
            pyc = cache_from_source(source)
            if os.path.isfile(pyc):
                paths.append(pyc)
        for path in paths:
            target = os.path.join(dest, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(path, target)
            count += 1
    return count


if __name__ == "__main__":
    distribution, destination = sys.argv[1:3]
    print(f"staged {stage(distribution, destination)} files of {distribution} in {destination}")
