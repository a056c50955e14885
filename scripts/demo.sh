#!/usr/bin/env bash
# The main job: set up, build the AV-digits demo set, catalog it, train SeLaVi (cpu-small) and open
# the Studio on the result. Every step reuses what an earlier run already built.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NUMBA_THREADING_LAYER=workqueue
demo=${SELAVI_DEMO_DIR:-data/avdigits}
catalog=${SELAVI_DEMO_CATALOG:-data/catalog}
run=${SELAVI_DEMO_RUN:-runs/demo}
variant=${SELAVI_DEMO_VARIANT:-balanced}

.venv/bin/selavi demo-data "$demo" --variant "$variant"
.venv/bin/selavi ingest "$demo" --format csv --out "$catalog"
if .venv/bin/selavi previews --help >/dev/null 2>&1; then .venv/bin/selavi previews "$catalog"; fi
if [ ! -f "$run/run.json" ]; then
  .venv/bin/selavi train "$catalog" --out "$run" --preset cpu-small
fi
.venv/bin/selavi evaluate "$run" --no-anmi || true
if .venv/bin/selavi app --help >/dev/null 2>&1; then
  exec .venv/bin/selavi app "$run" "$@"
fi
