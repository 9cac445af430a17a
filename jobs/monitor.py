"""spark-submit / Databricks entry point:
``spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/monitor.py --config conf/x.yaml [--start ...]``.

The session is the one spark-submit (or Databricks) started; locally it is built with the Delta defaults. Under
spark-submit the ``--conf`` passed win over lakemon's defaults (``lakemon.session.submit_conf``). A
spark-submit without Delta on its classpath stops at start with an error naming the ``--packages`` to pass.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Allow running from a checkout without installing the package (e.g. spark-submit on a cluster).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lakemon.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
